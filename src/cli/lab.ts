// `ferry lab up|down|status`: the network-namespace lab of src/lab, driven from the shell.
// `up` leaves the lab running after the command exits; `down` removes it, also when the process
// that built it was killed.

import { FerryError } from '../errors.js';
import { Lab, DEFAULT_PREFIX, DEFAULT_SUBNET, type LinkShape, type LabStatus } from '../lab/lab.js';
import { parseFlags } from './args.js';
import { UsageError } from './errors.js';

const USAGE = `usage: ferry lab up [--prefix P] [--subnet CIDR] [--rate MBIT] [--delay MS] [--loss PCT]
       ferry lab down [--prefix P]
       ferry lab status [--prefix P] [--json]

  up      build the lab (namespaces P+lan, P+host-a, P+host-b, P+storage, P+client on one LAN),
          replacing any lab with the same prefix; it stays up after this command exits
          --rate, --delay, --loss shape every host's link (each direction)
  down    remove the lab: its processes, namespaces, bridges, veths and TAPs
  status  show the lab; exit status 0 when it is up, 1 when absent or incomplete
  --prefix P     namespace name prefix (default ${DEFAULT_PREFIX})
  --subnet CIDR  the LAN's IPv4 network (default ${DEFAULT_SUBNET}); hosts get .1-.4, VMs .100+
Needs root.
`;

function positiveNumber(flag: string, text: string | undefined, allowZero: boolean): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    throw new UsageError(`${flag} needs a ${allowZero ? 'non-negative' : 'positive'} number, got '${text}'`);
  }
  return n;
}

export async function labCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case 'up': return await up(rest);
      case 'down': return await down(rest);
      case 'status': return await status(rest);
      case 'help': case '--help': case '-h':
        process.stdout.write(USAGE);
        return 0;
      case undefined:
        throw new UsageError('missing subcommand (up, down or status)');
      default:
        throw new UsageError(`unknown subcommand '${sub}'`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`ferry lab: ${err.message}\n${USAGE}`);
      return 2;
    }
    if (err instanceof FerryError) {
      process.stderr.write(`ferry lab: ${err.message} [${err.code}]\n`);
      return 1;
    }
    throw err;
  }
}

async function up(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, {
    prefix: { type: 'string' },
    subnet: { type: 'string' },
    rate: { type: 'string' },
    delay: { type: 'string' },
    loss: { type: 'string' },
  });
  const shape: LinkShape = {};
  const rate = positiveNumber('--rate', values.rate, false);
  const delay = positiveNumber('--delay', values.delay, true);
  const loss = positiveNumber('--loss', values.loss, true);
  if (rate !== undefined) shape.rateMbit = rate;
  if (delay !== undefined) shape.delayMs = delay;
  if (loss !== undefined) shape.lossPercent = loss;
  const lab = await Lab.up({
    prefix: values.prefix ?? DEFAULT_PREFIX,
    subnet: values.subnet ?? DEFAULT_SUBNET,
    ...(Object.keys(shape).length > 0 ? { shape } : {}),
  });
  // Deliberately no lab.down(): the lab outlives this command.
  process.stdout.write(formatStatus(await Lab.status(lab.prefix)));
  return 0;
}

async function down(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { prefix: { type: 'string' } });
  const prefix = values.prefix ?? DEFAULT_PREFIX;
  const report = await Lab.cleanup(prefix);
  if (report.namespaces.length === 0) process.stdout.write(`no lab with prefix '${prefix}'; nothing to remove\n`);
  else {
    process.stdout.write(`removed lab '${prefix}': ${report.namespaces.length} namespaces` +
      (report.killed.length ? `, ${report.killed.length} processes killed` : '') + '\n');
  }
  return 0;
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseFlags(argv, { prefix: { type: 'string' }, json: { type: 'boolean' } });
  const st = await Lab.status(values.prefix ?? DEFAULT_PREFIX);
  process.stdout.write(values.json ? JSON.stringify(st) + '\n' : formatStatus(st));
  return st.state === 'up' ? 0 : 1;
}

function formatStatus(st: LabStatus): string {
  if (st.state === 'absent') return `no lab with prefix '${st.prefix}'\n`;
  const lines = [`lab '${st.prefix}': ${st.state}, subnet ${st.subnet ?? '?'}${st.lanPresent ? '' : ' (LAN switch missing)'}`];
  for (const h of st.hosts) {
    if (!h.present) { lines.push(`  ${h.name.padEnd(8)} missing`); continue; }
    const shaping = [h.qdisc, h.lossPercent ? `loss ${h.lossPercent}%` : null, h.dropping ? 'DROPPING' : null]
      .filter((s): s is string => s !== null).join(', ') || 'unshaped';
    const procs = h.processes.length ? `  processes: ${h.processes.map((p) => `${p.command}[${p.pid}]`).join(' ')}` : '';
    lines.push(`  ${h.name.padEnd(8)} ${(h.address ?? '-').padEnd(15)} netns ${h.netns}  link ${h.link}  ${shaping}${procs}`);
  }
  return lines.join('\n') + '\n';
}
