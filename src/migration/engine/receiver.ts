// The destination end of a migration, one per accepted connection: authenticate the source
// against a token this daemon issued, check it can host the VM, reserve it (created paused,
// RAM zeroed), write pages as they come, load the state on CommitRequest, and run the VM only
// on Activate. A failure before Committed frees the reservation; after Committed and before
// Activate the VM is kept paused (in doubt) and never run on our own.

import type { Socket } from 'node:net';
import type { MachineState } from '../../machine/boot/machine.js';
import { MigrationChannel } from './channel.js';
import { RECEIVER_TRANSITIONS, StageTracker, type ReceiverStage } from './stages.js';
import { reportEnd, type MigrationProgress, type MigrationReport } from './report.js';
import { MigrationError, abortCodeFor, failureCode } from '../errors.js';
import type { TokenIssuer } from '../protocol/auth.js';
import type { PageCompression } from '../protocol/codec.js';
import {
  AbortCode, PAGE_SIZE, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN, SWITCH_VERSION, negotiateVersion,
  type AbsentMessage, type ConfigMessage, type DestinationSwitchEvent, type FramesMessage, type ProtocolMessage,
} from '../protocol/messages.js';
import { ABSENT_PEER, ABSENT_SWAP, type PagedMemory } from '../../vm/paging/marks.js';
import type { FaultStats, PageSupplier, StallPercentiles } from '../../vm/paging/page-server.js';
import { PeerPages } from '../postcopy/peer-pages.js';
import { wallClockMs } from '../../machine/clock.js';
import type { ActivationTimes } from '../../vm/types.js';

/** The reserved VM, as the receiver drives it (src/vm/vm.ts Vm provides it). */
export interface MigrationTarget {
  readonly name: string;
  memory(): Promise<PagedMemory>;
  loadMigratedState(state: MachineState): Promise<void>;
  /** Runs the VM; resolves with the wall clock of its resume. */
  activate(): Promise<{ readonly resumedAtMs: number }>;
  /** Frames carried from the source (protocol v3), for NIC `nic`. */
  injectFrames(nic: number, frames: readonly Uint8Array[]): Promise<{ readonly delivered: number; readonly dropped: number }>;
  /** The activated VM's first outward signs and the frames its held NICs dropped. */
  activationTimes(): Promise<ActivationTimes>;
  /** Post-copy: where the VM's faults on pages still at the source go. */
  attachPeerPages(supplier: PageSupplier | undefined): void;
  faultStats(): FaultStats;
  /** The fault stalls' p50/p99/longest (null without faults); absent: not measured. */
  stallPercentiles?(): StallPercentiles | null;
}

/** What the receiver needs from its daemon. */
export interface IncomingHost {
  readonly issuer: TokenIssuer;
  /** Pre-migration and reservation: throws MigrationError('MIGRATION_CANNOT_HOST') with the
   * reason, or returns the VM created paused with its devices open. */
  reserve(config: ConfigMessage, peer: string): Promise<MigrationTarget>;
  /** Frees a reservation that will never run here. */
  discard(target: MigrationTarget, reason: string): Promise<void>;
  /** The VM ran here after Activate: the daemon now owns it as any other. */
  adopt(target: MigrationTarget): void;
  /** Committed, never activated, source gone: kept paused for an operator to resolve. */
  inDoubt(target: MigrationTarget, reason: string): void;
  /** Post-copy lost its source: the adopted VM lacks pages that existed only there. Stop it
   * and mark it failed with `reason`. */
  lost(target: MigrationTarget, reason: string): Promise<void>;
}

export interface ReceiverTimeouts {
  readonly handshakeMs: number;
  /** Silence from the source while RAM streams in (it never pauses for long). */
  readonly idleMs: number;
  /** Activate after Committed. */
  readonly activateMs: number;
}

export const DEFAULT_RECEIVER_TIMEOUTS: ReceiverTimeouts = { handshakeMs: 10_000, idleMs: 20_000, activateMs: 30_000 };

/** After Done: how long the source may take to send SwitchEnd (the VM runs here regardless). */
const SWITCH_END_MS = 5_000;

export interface ReceiverOptions {
  readonly compressions?: readonly PageCompression[];
  readonly timeouts?: Partial<ReceiverTimeouts>;
  readonly onStage?: (stage: ReceiverStage) => void;
}

export class MigrationReceiver {
  private readonly channel: MigrationChannel;
  private readonly tracker: StageTracker<ReceiverStage>;
  private readonly timeouts: ReceiverTimeouts;
  private target: MigrationTarget | undefined;
  private vmName = '';
  private ramBytes = 0;
  private round = 0;
  private pagesReceived = 0;
  private pagesInRound = 0;
  private cancelReason: string | undefined;
  /** Absent frames of the switch, applied to the absent map before the state loads. */
  private readonly absent: AbsentMessage[] = [];
  private swapAllowed = false;
  private peerPages: PeerPages | undefined;
  private adopted: MigrationTarget | undefined;
  private version = 0;
  /** This side's instants of the switch, for SwitchTimes. */
  private readonly events: { event: DestinationSwitchEvent; atMs: number }[] = [];
  private framesDelivered = 0;
  private framesDropped = 0;
  /** Frame deliveries and the timeline's reply, in arrival order, beside the post-copy loop. */
  private tail: Promise<void> = Promise.resolve();
  readonly peer: string;

  constructor(socket: Socket, private readonly host: IncomingHost, opts: ReceiverOptions = {}) {
    this.peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    this.timeouts = { ...DEFAULT_RECEIVER_TIMEOUTS, ...opts.timeouts };
    this.channel = new MigrationChannel(socket, { codec: { compressions: opts.compressions ?? [] }, stallTimeoutMs: this.timeouts.idleMs });
    this.tracker = new StageTracker(RECEIVER_TRANSITIONS, { kind: 'pre-migration' }, (s) => opts.onStage?.(s));
  }

  get stage(): ReceiverStage { return this.tracker.stage; }
  get vm(): string { return this.vmName; }

  progress(): MigrationProgress {
    return {
      stage: this.tracker.stage.kind, round: this.round, bytes: this.channel.bytesIn + this.channel.bytesOut,
      pagesSent: this.pagesReceived, pagesRemaining: 0, elapsedMs: Math.round(this.tracker.elapsedMs),
    };
  }

  /** Stops an incoming migration before commitment (the source is told and resumes). */
  cancel(reason = 'cancelled by the destination operator'): boolean {
    const k = this.tracker.stage.kind;
    if (k !== 'pre-migration' && k !== 'reservation' && k !== 'receiving') return false;
    this.cancelReason ??= reason;
    this.channel.fail(new MigrationError('MIGRATION_CANCELLED', reason));
    return true;
  }

  /** Serves the connection to its end; never throws. */
  async run(): Promise<MigrationReport> {
    try {
      await this.serve();
      this.tracker.move({ kind: 'completed' });
    } catch (e) {
      await this.handleFailure(e);
    } finally {
      this.channel.close();
    }
    return this.report();
  }

  private async serve(): Promise<void> {
    const ch = this.channel;
    await this.authenticate(ch);
    const config = await ch.expect(['Config'], this.timeouts.handshakeMs, 'the VM configuration');
    this.vmName = config.name;
    this.ramBytes = config.ramBytes;
    this.swapAllowed = typeof config.config['swap'] === 'string';
    this.tracker.move({ kind: 'reservation' });
    const target = await this.host.reserve(config, this.peer);
    this.target = target;
    const mem = await target.memory();
    if (mem.bytes.length !== config.ramBytes) throw new MigrationError('MIGRATION_INTERNAL', `reserved ${mem.bytes.length} bytes of RAM for ${config.ramBytes}`);
    this.checkCancelled();
    await ch.send({ type: 'Reserved', vmId: target.name });
    this.tracker.move({ kind: 'receiving', round: 0 });

    let loading: Promise<void> | undefined;
    for (;;) {
      const m = await ch.next(this.timeouts.idleMs, 'the migration stream');
      if (m.type === 'CommitRequest') {
        if (!loading) throw new MigrationError('MIGRATION_PROTOCOL', 'CommitRequest before DeviceState');
        if (m.finalRound !== this.round) throw new MigrationError('MIGRATION_PROTOCOL', `CommitRequest names round ${m.finalRound}, the last round ended was ${this.round}`);
        break;
      }
      if (m.type === 'DeviceState') {
        if (loading) throw new MigrationError('MIGRATION_PROTOCOL', 'a second DeviceState');
        // Pages still absent (post-copy, Agile) are announced before the state: they are
        // marked, and served from the peer, before anything of the VM can touch them.
        if (this.applyAbsent(mem)) {
          this.peerPages = new PeerPages(mem, (pages) => ch.send({ type: 'PageRequest', pages }));
          target.attachPeerPages(this.peerPages);
        }
        loading = this.loadState(target, m.state as unknown as MachineState);
        continue;
      }
      if (m.type === 'Absent' && loading) throw new MigrationError('MIGRATION_PROTOCOL', 'Absent after DeviceState');
      if (m.type === 'Absent') {
        if (m.origin === 'swap' && !this.swapAllowed) throw new MigrationError('MIGRATION_PROTOCOL', 'pages announced on a swap device, but the VM has none');
        this.absent.push(m);
        continue;
      }
      this.onStreamMessage(m, mem.bytes);
      if (m.type === 'RoundEnd') {
        await ch.send({ type: 'RoundAck', round: m.round, pagesReceived: this.pagesInRound });
        this.pagesInRound = 0;
      }
    }

    this.tracker.move({ kind: 'commitment' });
    try {
      // A source that gives up meanwhile (its switch bound) must not wait for the load.
      await untilFailed(ch, loading);
    } catch (e) {
      if (ch.failed) throw ch.failed;
      throw new MigrationError('MIGRATION_STATE_REJECTED', `the machine state does not load: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    // Committed once the frame is handed to the socket, not once it drained: the source may
    // act on it even if our side then fails, so from here we are in doubt, never discarding.
    const committed = ch.send({ type: 'Committed' });
    this.tracker.move({ kind: 'committed' });
    this.mark('committed');
    await committed;
    await ch.expect(['Activate'], this.timeouts.activateMs, 'activation');
    this.mark('activate');
    this.tracker.move({ kind: 'activation' });
    // Pages flow from Activate on: resuming may itself wait on absent pages (a NIC's
    // announcement writes guest buffers), so they must be taken in while we activate.
    const pages = this.peerPages ? this.receivePostcopy(ch, this.peerPages, target) : undefined;
    pages?.catch(() => undefined);
    try {
      const { resumedAtMs } = await target.activate();
      this.mark('first-instruction', resumedAtMs);
    } catch (e) {
      throw new MigrationError('MIGRATION_INTERNAL', `the VM did not start: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
    }
    // Done before anything else: it ends the source's downtime, and recording the VM as this
    // host's (a file write) measured a quarter of a millisecond.
    const done = (async () => ch.send({ type: 'Done' }))();
    this.mark('done');
    this.host.adopt(target);
    this.target = undefined;
    if (!this.peerPages) {
      // Best effort: the VM runs here whether or not the source hears it.
      await done.catch(() => undefined);
      await this.receiveSwitchTail(ch, target).catch(() => undefined);
      return;
    }
    this.adopted = target;
    await done;
    this.tracker.move({ kind: 'postcopy' });
    await pages;
    target.attachPeerPages(undefined);
  }

  /** Starts loading the state into the reserved VM as it arrives: a v3 source sends it before
   * the last pages, which land meanwhile, and the load touches no guest RAM (the machine is
   * quiesced: its devices start no work until activation). A failure is raised at the commit,
   * where the promise is awaited. */
  private loadState(target: MigrationTarget, state: MachineState): Promise<void> {
    const loading = target.loadMigratedState(state).then(() => this.mark('state-loaded'));
    loading.catch(() => undefined);
    return loading;
  }

  private mark(event: DestinationSwitchEvent, atMs = wallClockMs()): void {
    this.events.push({ event, atMs });
  }

  /** Pre-copy's end (v3): the source's last carried frames, then SwitchEnd, answered with our
   * half of the timeline. The VM already runs here: nothing in it can fail the migration. */
  private async receiveSwitchTail(ch: MigrationChannel, target: MigrationTarget): Promise<void> {
    if (this.version < SWITCH_VERSION) return;
    for (;;) {
      const m = await ch.next(SWITCH_END_MS, 'the end of the switch');
      if (m.type === 'Frames') await this.deliverFrames(m, target);
      else if (m.type === 'SwitchEnd') return this.sendSwitchTimes(ch, target);
      else throw new MigrationError('MIGRATION_PROTOCOL', `unexpected ${m.type} after Done`);
    }
  }

  /** Runs `work` after the work queued before it; a failure there loses frames or the
   * timeline, never the VM. */
  private inOrder(work: () => Promise<void>): void {
    this.tail = this.tail.then(work).catch(() => undefined);
  }

  private async deliverFrames(m: FramesMessage, target: MigrationTarget): Promise<void> {
    const r = await target.injectFrames(m.nic, m.frames);
    this.framesDelivered += r.delivered;
    this.framesDropped += r.dropped;
  }

  private async sendSwitchTimes(ch: MigrationChannel, target: MigrationTarget): Promise<void> {
    const t = await target.activationTimes();
    if (t.announceSentMs !== null) this.mark('announce-sent', t.announceSentMs);
    if (t.firstFrameOutMs !== null) this.mark('first-frame-out', t.firstFrameOutMs);
    await ch.send({ type: 'SwitchTimes', events: this.events, framesDelivered: this.framesDelivered, framesDropped: this.framesDropped + t.framesDropped });
  }

  /** Marks the announced pages absent; returns whether any are to come from the source. */
  private applyAbsent(mem: PagedMemory): boolean {
    let peer = false;
    for (const m of this.absent) {
      const mark = m.origin === 'peer' ? ABSENT_PEER : ABSENT_SWAP;
      for (const run of m.runs) {
        if (run.first + run.count > mem.pageCount) throw new MigrationError('MIGRATION_PROTOCOL', `absent run ${run.first}+${run.count} leaves RAM`);
        mem.absent.fill(mark, run.first, run.first + run.count);
        if (mark === ABSENT_PEER) peer = true;
      }
    }
    return peer;
  }

  /** The VM runs; pages arrive pushed or requested until the source says all went. */
  private async receivePostcopy(ch: MigrationChannel, peer: PeerPages, target: MigrationTarget): Promise<void> {
    for (;;) {
      const m = await ch.next(this.timeouts.idleMs, 'post-copy pages');
      if (m.type === 'Pages') {
        this.pagesReceived += m.pages.length;
        peer.deliver(m);
        // Opens the source's push window (src/migration/postcopy/pusher.ts): every page of every
        // post-copy frame so far, installed or a duplicate.
        await ch.send({ type: 'PostcopyAck', pagesReceived: peer.received + peer.duplicates });
        continue;
      }
      // Never awaited here: delivering a frame may wait for a page that only this loop brings.
      if (m.type === 'Frames' && this.version >= SWITCH_VERSION) {
        this.inOrder(() => this.deliverFrames(m, target));
        continue;
      }
      if (m.type === 'SwitchEnd' && this.version >= SWITCH_VERSION) {
        this.inOrder(() => this.sendSwitchTimes(ch, target));
        continue;
      }
      if (m.type !== 'PostcopyEnd') throw new MigrationError('MIGRATION_PROTOCOL', `unexpected ${m.type} during post-copy`);
      const missing = peer.missing();
      if (missing > 0) throw new MigrationError('MIGRATION_PROTOCOL', `PostcopyEnd with ${missing} pages never sent`);
      const f = target.faultStats();
      const pct = target.stallPercentiles?.();
      if (pct && this.version >= SWITCH_VERSION) await ch.send({ type: 'PostcopyStats', p50Us: pct.p50Us, p99Us: pct.p99Us, maxUs: pct.maxUs });
      await ch.send({ type: 'PostcopyComplete', pagesReceived: peer.received, faults: f.faults, stallUsTotal: f.stallUsTotal, stallUsMax: f.stallUsMax, duplicates: peer.duplicates });
      return;
    }
  }

  private async authenticate(ch: MigrationChannel): Promise<void> {
    const hello = await ch.expect(['Hello'], this.timeouts.handshakeMs, 'Hello');
    const ours = { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX };
    const version = negotiateVersion(ours, hello.versions);
    this.version = version;
    const challenge = this.host.issuer.challenge(version, hello.tokenId, hello.sourceNonce);
    await ch.send({ type: 'Challenge', versions: ours, version, destinationNonce: challenge.transcript.destinationNonce });
    const auth = await ch.expect(['Auth'], this.timeouts.handshakeMs, 'Auth');
    const proof = this.host.issuer.verify(challenge, auth.proof);
    await ch.send({ type: 'AuthOk', proof });
  }

  private onStreamMessage(m: ProtocolMessage, ram: Uint8Array): void {
    switch (m.type) {
      case 'Pages':
        this.noteRound(m.round);
        for (let i = 0; i < m.pages.length; i++) {
          ram.set(m.data.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE), m.pages[i]! * PAGE_SIZE);
        }
        this.pagesReceived += m.pages.length;
        this.pagesInRound += m.pages.length;
        return;
      case 'ZeroRun':
        this.noteRound(m.round);
        ram.fill(0, m.firstPage * PAGE_SIZE, (m.firstPage + m.count) * PAGE_SIZE);
        return;
      case 'RoundEnd':
        this.noteRound(m.round);
        return;
      default:
        throw new MigrationError('MIGRATION_PROTOCOL', `unexpected ${m.type} while receiving RAM`);
    }
  }

  /** Rounds only move forward: an older round's pages after a newer one's would overwrite newer data. */
  private noteRound(round: number): void {
    if (round < this.round) throw new MigrationError('MIGRATION_PROTOCOL', `round ${round} data after round ${this.round}`);
    if (round > this.round) {
      this.round = round;
      this.tracker.move({ kind: 'receiving', round });
    }
  }

  private checkCancelled(): void {
    if (this.cancelReason !== undefined) throw new MigrationError('MIGRATION_CANCELLED', this.cancelReason);
  }

  private async handleFailure(e: unknown): Promise<void> {
    const error = e instanceof Error ? e : new Error(String(e));
    const code = failureCode(error);
    const stage = this.tracker.stage.kind;
    const target = this.target;
    this.target = undefined;
    if (this.adopted && this.peerPages) {
      // The VM ran here and its missing pages existed only on the source: it cannot go on.
      const lost = this.peerPages.missing();
      this.peerPages.fail(error);
      const reason = `post-copy source lost: ${error.message}; ${lost} guest pages existed only on the source`;
      await this.host.lost(this.adopted, reason).catch(() => undefined);
      this.tracker.move({ kind: 'failed', error: reason, code: 'MIGRATION_POSTCOPY_SOURCE_LOST' });
      return;
    }
    // Pages a device or vCPU waits on will never come: fail those waits, so the VM's thread is
    // free to stop at once and the reservation goes now, not after a fault's own timeout.
    if (!this.adopted) this.peerPages?.fail(error);
    // A source that aborts has not taken our Committed as the handover (it aborts only before
    // its commit point) and resumes its copy: ours is discarded, not kept in doubt.
    if (stage === 'committed' && target && code !== 'MIGRATION_PEER_ABORTED') {
      // The source may have taken Committed as the handover: it will not resume its copy, and
      // we must not run ours unasked. Keep it for an operator (activate or discard).
      this.host.inDoubt(target, error.message);
      this.tracker.move({ kind: 'in-doubt', error: error.message, code });
      return;
    }
    if (code !== 'MIGRATION_PEER_ABORTED') {
      // The source may resume its paused copy only on ActivationFailed: the guest never ran here.
      const wire = stage === 'activation' ? AbortCode.ActivationFailed : abortCodeFor(error);
      await this.channel.abort(wire, error.message);
    }
    if (target) await this.host.discard(target, error.message).catch(() => undefined);
    this.tracker.move({ kind: 'failed', error: error.message, code });
  }

  report(): MigrationReport {
    const s = this.tracker.stage;
    return {
      vm: this.vmName,
      direction: 'in',
      peer: this.peer,
      ...reportEnd(s),
      totalMs: Math.round(this.tracker.elapsedMs),
      downtimeMs: null,
      bytes: this.channel.bytesIn + this.channel.bytesOut,
      ramBytes: this.ramBytes,
      rounds: [],
      stopRule: null,
      stages: this.tracker.timeline.map((t) => ({ ...t })),
      compression: 'n/a',
      pages: { sent: this.pagesReceived, zero: 0, skipped: 0 },
      pageBytes: { raw: this.pagesReceived * PAGE_SIZE, wire: 0 },
    };
  }
}

/** `work`, or the channel's failure if that comes first. */
function untilFailed<T>(ch: MigrationChannel, work: Promise<T>): Promise<T> {
  let off: (() => void) | undefined;
  const failed = new Promise<never>((_, reject) => { off = ch.onFail(reject); });
  return Promise.race([work, failed]).finally(() => off?.());
}
