// What the blackout probe reports, the guest side it talks to, and the figures every migration
// row carries. Shared by the probe's process and its handle.

/** The guest's side of the probe: netserver's UDP echo, TCP echo and paced stream. */
export const GUEST_PROBE_PORTS = { udpEcho: 7, tcpEcho: 7, stream: 19 } as const;
/** Stream pacing: a 512-byte write every 10 ms. TCP stalls come in retransmission timeouts
 * (200 ms and up), and every segment costs the emulated guest CPU the 1 ms UDP echo already
 * takes much of (see DESIGN.md). */
export const GUEST_PROBE_STREAM_INTERVAL_MS = 10;
/** One short connect every 25 ms: a SYN lost in any blackout of 25 ms or more shows (~1 s). */
export const PROBE_CONNECT_EVERY_MS = 25;
/** Starts the echo in the guest (`& true`: the console driver appends `; echo marker`). */
export const GUEST_PROBE_COMMAND =
  `netserver --udp-echo ${GUEST_PROBE_PORTS.udpEcho} --echo ${GUEST_PROBE_PORTS.tcpEcho} ` +
  `--stream ${GUEST_PROBE_PORTS.stream} --stream-interval-ms ${GUEST_PROBE_STREAM_INTERVAL_MS} >/dev/null 2>&1 & true`;

export interface ProbeTarget {
  readonly host: string;
  readonly udpPort: number;
  readonly tcpEchoPort: number;
  readonly streamPort: number;
  /** Datagram interval (default 1 ms) and connect interval (default PROBE_CONNECT_EVERY_MS);
   * a connect interval of 0 or a stream port of 0 leaves that part out. */
  readonly udpIntervalMs?: number;
  readonly connectEveryMs?: number;
}

export function guestProbeTarget(host: string): ProbeTarget {
  return { host, udpPort: GUEST_PROBE_PORTS.udpEcho, tcpEchoPort: GUEST_PROBE_PORTS.tcpEcho, streamPort: GUEST_PROBE_PORTS.stream };
}

/** A silence, epoch ms at both ends (the last arrival before it, the first after it). */
export interface ProbeGap {
  readonly ms: number;
  readonly startMs: number;
  readonly endMs: number;
  /** Nothing arrived after it before the probe stopped: at least `ms`. */
  readonly open: boolean;
}

export interface ProbeReport {
  /** The window the probe watched, epoch ms. */
  readonly startedAtMs: number;
  readonly stoppedAtMs: number;
  readonly udp: {
    readonly intervalMs: number;
    readonly sent: number;
    readonly received: number;
    readonly lost: number;
    readonly duplicates: number;
    /** The longest run without replies: the client's blackout. */
    readonly maxGap: ProbeGap | null;
    /** The probe's own longest pause between sends: its achieved resolution. */
    readonly sendGapMaxMs: number;
    readonly rttMaxMs: number;
  };
  readonly stream: {
    readonly bytes: number;
    /** Longest time between two arrivals of the guest's paced stream. */
    readonly maxStall: ProbeGap | null;
    /** Every byte had its place in the n % 251 pattern. */
    readonly intact: boolean;
    /** Connections that ended with an error (the probe reconnects). */
    readonly errors: number;
  };
  readonly connect: {
    readonly everyMs: number;
    readonly attempts: number;
    readonly completed: number;
    readonly failed: number;
    /** Slowest connect + one-byte echo + close (ms); a lost SYN shows as ~1000. */
    readonly maxMs: number;
    readonly medianMs: number | null;
    readonly slowestStartMs: number;
  };
}

/** The probe's figures as every migration row reports them (null: no probe ran). */
export interface ProbeFields {
  client_blackout_ms: number | null;
  tcp_stall_ms: number | null;
  tcp_connect_max_ms: number | null;
  udp_lost: number | null;
}

export function probeFields(p: ProbeReport | null | undefined): ProbeFields {
  const r1 = (x: number) => Math.round(x * 10) / 10;
  if (!p) return { client_blackout_ms: null, tcp_stall_ms: null, tcp_connect_max_ms: null, udp_lost: null };
  return {
    client_blackout_ms: p.udp.maxGap ? r1(p.udp.maxGap.ms) : null,
    tcp_stall_ms: p.stream.maxStall ? r1(p.stream.maxStall.ms) : null,
    tcp_connect_max_ms: p.connect.completed + p.connect.failed > 0 ? r1(p.connect.maxMs) : null,
    udp_lost: p.udp.lost,
  };
}
