// The messages of the migration stream (docs/migration-protocol.md). Each has a fixed frame type
// code; the union is discriminated by `type` so handlers switch exhaustively.

import { MigrationProtocolError } from './errors.js';

/** Versions this build speaks. Both ends announce a range so a newer daemon can still talk down. */
export const PROTOCOL_VERSION_MIN = 1;
/** Version 2 adds post-copy: Absent, PageRequest, PostcopyEnd, PostcopyComplete, PostcopyAck.
 * Version 3 adds the switch's tail: Frames, SwitchEnd, SwitchTimes. */
export const PROTOCOL_VERSION_MAX = 3;
/** The first version with post-copy messages. */
export const POSTCOPY_VERSION = 2;
/** The first version that carries the source's late NIC frames and the destination's timeline. */
export const SWITCH_VERSION = 3;

export const PAGE_SIZE = 4096;
/** Bounds one Pages frame to ~1 MiB of page data: big enough to amortise framing, small
 * enough that an Abort or a RoundAck is never stuck behind seconds of bulk data. */
export const MAX_BATCH_PAGES = 256;
export const FRAME_HEADER_BYTES = 8;
/** Sized for the largest single-frame payload, the DeviceState JSON; a page batch is ~1 MiB. */
export const MAX_FRAME_PAYLOAD = 4 << 20;
/** "FERRYMIG": lets a destination refuse a stray non-ferry connection with a clear message. */
export const HELLO_MAGIC = Buffer.from('FERRYMIG', 'ascii');
export const NONCE_BYTES = 32;
export const TOKEN_ID_BYTES = 16;
export const PROOF_BYTES = 32;
export const MAX_SHORT_STRING = 255;
export const MAX_TEXT_STRING = 1024;
export const MAX_DEVICES = 64;
/** A carried Ethernet frame: a header at least, and at most what virtio-net accepts. */
export const MIN_CARRIED_FRAME = 14;
export const MAX_CARRIED_FRAME = 65_550;
/** Frames in one Frames message (its payload also stays within MAX_FRAME_PAYLOAD). */
export const MAX_CARRIED_FRAMES = 1024;
/** Events in one SwitchTimes message. */
export const MAX_SWITCH_EVENTS = 32;

export const MessageType = {
  Hello: 0x01,
  Challenge: 0x02,
  Auth: 0x03,
  AuthOk: 0x04,
  Config: 0x10,
  Reserved: 0x11,
  Pages: 0x20,
  ZeroRun: 0x21,
  RoundEnd: 0x22,
  RoundAck: 0x23,
  Absent: 0x24,
  PageRequest: 0x25,
  PostcopyEnd: 0x26,
  PostcopyComplete: 0x27,
  PostcopyAck: 0x28,
  DeviceState: 0x30,
  CommitRequest: 0x31,
  Committed: 0x32,
  Activate: 0x33,
  Done: 0x34,
  Frames: 0x35,
  SwitchEnd: 0x36,
  SwitchTimes: 0x37,
  PostcopyStats: 0x38,
  Cancel: 0x7e,
  Abort: 0x7f,
} as const;
export type MessageTypeName = keyof typeof MessageType;

/** Page compression ids carried in a Pages frame (docs/migration-protocol.md). 1 is reserved
 * for lz4, measured and not adopted (src/migration/compression/DESIGN.md). */
export const Compression = { None: 0, Zstd: 2 } as const;

/** Wire codes of Abort. Receivers must accept codes they do not know (newer peers add some). */
export const AbortCode = {
  Protocol: 1,
  VersionUnsupported: 2,
  AuthFailed: 3,
  CannotHost: 4,
  ReservationFailed: 5,
  Cancelled: 6,
  Internal: 7,
  Timeout: 8,
  DeviceStateRejected: 9,
  CommitFailed: 10,
  ActivationFailed: 11,
  SourceFailed: 12,
} as const;

export interface VersionRange {
  readonly min: number;
  readonly max: number;
}

/** source → destination, first frame. Its layout never changes across versions. */
export interface HelloMessage {
  readonly type: 'Hello';
  readonly versions: VersionRange;
  readonly tokenId: Buffer;
  readonly sourceNonce: Buffer;
}
/** destination → source: the chosen version and the destination's nonce. Layout never changes. */
export interface ChallengeMessage {
  readonly type: 'Challenge';
  readonly versions: VersionRange;
  readonly version: number;
  readonly destinationNonce: Buffer;
}
/** source → destination: HMAC proof that the source holds the token's secret. */
export interface AuthMessage {
  readonly type: 'Auth';
  readonly proof: Buffer;
}
/** destination → source: the destination's own proof, so the source knows it reached the
 * daemon that issued the token and not an impostor. */
export interface AuthOkMessage {
  readonly type: 'AuthOk';
  readonly proof: Buffer;
}
export interface ConfigMessage {
  readonly type: 'Config';
  readonly ramBytes: number;
  readonly pageSize: number;
  readonly isa: string;
  readonly name: string;
  readonly devices: readonly string[];
  /** The VM's configuration as the source daemon holds it (src/vm/types.ts VmConfig). */
  readonly config: Record<string, unknown>;
}
export interface ReservedMessage {
  readonly type: 'Reserved';
  readonly vmId: string;
}
export interface PagesMessage {
  readonly type: 'Pages';
  readonly round: number;
  /** How the batch travelled; `data` is always the uncompressed pages. */
  readonly compression: number;
  /** Strictly increasing guest page numbers (physical address offset from RAM base / 4096). */
  readonly pages: readonly number[];
  /** pages.length × 4096 bytes, page i at offset i × 4096. */
  readonly data: Buffer;
  /** Sender only: `data` already compressed with `compression` (packBatch in
   * src/migration/compression), so the encoder does not compress it again. Never decoded. */
  readonly packed?: Buffer;
}
export interface ZeroRunMessage {
  readonly type: 'ZeroRun';
  readonly round: number;
  readonly firstPage: number;
  readonly count: number;
}
export interface RoundEndMessage {
  readonly type: 'RoundEnd';
  readonly round: number;
  readonly pagesSent: number;
  readonly pagesZeroed: number;
}
export interface RoundAckMessage {
  readonly type: 'RoundAck';
  readonly round: number;
  readonly pagesReceived: number;
}
/** Where an absent page's content is: the source pushes or serves it (post-copy), or it is on
 * the VM's swap device on shared storage (Agile). Wire values 1 and 2. */
export type AbsentOrigin = 'peer' | 'swap';
export const MAX_ABSENT_RUNS = 65536;
/** source → destination (v2), after the last round and before DeviceState: these pages are not
 * in the destination's RAM; it runs with them absent and faults them in from `origin`. */
export interface AbsentMessage {
  readonly type: 'Absent';
  readonly origin: AbsentOrigin;
  /** Ascending, non-overlapping, non-empty runs; 1..MAX_ABSENT_RUNS per frame. */
  readonly runs: readonly { readonly first: number; readonly count: number }[];
}
/** destination → source (v2), during post-copy: pages a vCPU or device is stalled on. They jump
 * the push queue. 1..MAX_BATCH_PAGES distinct pages, any order. */
export interface PageRequestMessage {
  readonly type: 'PageRequest';
  readonly pages: readonly number[];
}
/** source → destination (v2): every absent page of origin `peer` has been sent. */
export interface PostcopyEndMessage {
  readonly type: 'PostcopyEnd';
  readonly pagesPushed: number;
}
/** destination → source (v2), during post-copy: how many pages of post-copy Pages frames have
 * arrived so far (cumulative). The source keeps at most a small window of pushed pages
 * unacknowledged, so a requested page never queues behind seconds of pushed ones. */
export interface PostcopyAckMessage {
  readonly type: 'PostcopyAck';
  readonly pagesReceived: number;
}
/** destination → source (v2): every page is in; the source may drop its copy. Carries what the
 * destination measured so the source's report shows it. */
export interface PostcopyCompleteMessage {
  readonly type: 'PostcopyComplete';
  readonly pagesReceived: number;
  /** Faults that had to wait for the network (vCPU and device). */
  readonly faults: number;
  /** Stall time summed over faults and the longest single stall, in microseconds. */
  readonly stallUsTotal: number;
  readonly stallUsMax: number;
  /** Pages that arrived when already present (a page sent twice): should be 0. */
  readonly duplicates: number;
}
export interface DeviceStateMessage {
  readonly type: 'DeviceState';
  /** A MachineState (src/machine/boot/machine.ts); the codec checks only that it is a JSON
   * object — Machine.checkState validates the rest on the destination. */
  readonly state: Record<string, unknown>;
}
export interface CommitRequestMessage {
  readonly type: 'CommitRequest';
  readonly finalRound: number;
}
export interface CommittedMessage {
  readonly type: 'Committed';
}
export interface ActivateMessage {
  readonly type: 'Activate';
}
export interface DoneMessage {
  readonly type: 'Done';
}
/** source → destination (v3), after Activate: frames that reached the source's NIC `nic` after
 * its state was taken, in arrival order. The destination delivers them to the same NIC. */
export interface FramesMessage {
  readonly type: 'Frames';
  readonly nic: number;
  readonly frames: readonly Uint8Array[];
}
/** source → destination (v3), after Done: no more Frames follow. */
export interface SwitchEndMessage {
  readonly type: 'SwitchEnd';
}
/** The instants the destination reports (wall clock, epoch ms with sub-ms precision). */
export const DESTINATION_SWITCH_EVENTS = ['state-loaded', 'committed', 'activate', 'first-instruction', 'first-frame-out', 'announce-sent', 'done'] as const;
export type DestinationSwitchEvent = (typeof DESTINATION_SWITCH_EVENTS)[number];
/** destination → source (v3), answering SwitchEnd: the switch as the destination saw it, plus
 * the frames it could not deliver. */
export interface SwitchTimesMessage {
  readonly type: 'SwitchTimes';
  readonly events: readonly { readonly event: DestinationSwitchEvent; readonly atMs: number }[];
  readonly framesDelivered: number;
  readonly framesDropped: number;
}
/** destination → source (v3), just before PostcopyComplete: the distribution of the stalls
 * post-copy faults caused (microseconds; from a uniform sample of them). */
export interface PostcopyStatsMessage {
  readonly type: 'PostcopyStats';
  readonly p50Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
}
export interface CancelMessage {
  readonly type: 'Cancel';
  readonly reason: string;
}
export interface AbortMessage {
  readonly type: 'Abort';
  readonly code: number;
  readonly message: string;
}

export type ProtocolMessage =
  | HelloMessage
  | ChallengeMessage
  | AuthMessage
  | AuthOkMessage
  | ConfigMessage
  | ReservedMessage
  | PagesMessage
  | ZeroRunMessage
  | RoundEndMessage
  | RoundAckMessage
  | AbsentMessage
  | PageRequestMessage
  | PostcopyEndMessage
  | PostcopyCompleteMessage
  | PostcopyAckMessage
  | DeviceStateMessage
  | CommitRequestMessage
  | CommittedMessage
  | ActivateMessage
  | DoneMessage
  | FramesMessage
  | SwitchEndMessage
  | SwitchTimesMessage
  | PostcopyStatsMessage
  | CancelMessage
  | AbortMessage;

/** Picks the highest version both ranges contain; refuses disjoint or malformed ranges with a
 * message naming both, which the destination also sends in its Abort. */
export function negotiateVersion(ours: VersionRange, theirs: VersionRange): number {
  const show = (r: VersionRange) => `${r.min}..${r.max}`;
  if (!validRange(ours)) throw new MigrationProtocolError('VERSION_UNSUPPORTED', `our version range ${show(ours)} is malformed`);
  if (!validRange(theirs)) throw new MigrationProtocolError('VERSION_UNSUPPORTED', `the peer's version range ${show(theirs)} is malformed`);
  const top = Math.min(ours.max, theirs.max);
  if (top < Math.max(ours.min, theirs.min)) {
    throw new MigrationProtocolError('VERSION_UNSUPPORTED', `no common protocol version: we speak ${show(ours)}, the peer speaks ${show(theirs)}`);
  }
  return top;
}

export function validRange(r: VersionRange): boolean {
  return Number.isInteger(r.min) && Number.isInteger(r.max) && r.min >= 1 && r.min <= r.max && r.max <= 0xffff;
}
