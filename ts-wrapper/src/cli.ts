// `remoteingress ...`: the Node CLI, with the binary's grammar.
//
// `remoteingress hub|edge ARGS` runs `remoteingress-bin plan hub|edge ARGS` with the same
// environment: the binary reads the flags, the `REMOTEINGRESS_*` variables, the TOML file and the
// edges file exactly as `remoteingress-bin hub|edge` would, and prints what it would start. The
// role is then started from that through RemoteIngressHub / RemoteIngressEdge, for their
// crash-restart supervision, so there is one parser of the command line, not two that drift.
// SIGINT/SIGTERM stop the role; on SIGHUP a hub runs `plan` again (which re-reads its files) and
// applies the edges and `[[egress]]` listeners. Every other subcommand is the binary's.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { BINARY_NAME, findBinary } from './binary.js';
import { RemoteIngressEdge } from './edge.js';
import type { IEdgeConfig, IEgressListenerConfig, IHubConfig, TAllowedEdge } from './generated/ipc.js';
import { RemoteIngressHub } from './hub.js';
import type { IRemoteIngressOptions } from './supervisor.js';
import { EDGE_EVENT_NAMES, HUB_EVENT_NAMES } from './types.js';

/** Exit status for a usage or configuration error (sysexits EX_USAGE, as the Rust CLI). */
export const EXIT_USAGE = 64;

/** Picks the role when no subcommand is given, as for the binary. */
const MODE = 'REMOTEINGRESS_MODE';

const USAGE = `Usage: remoteingress hub|edge [FLAGS]   (or ${MODE}=hub|edge remoteingress [FLAGS])
       remoteingress check|token|secret|schema|status|completions ...   (the binary's own)

The flags, the REMOTEINGRESS_* variables and the files are those of ${BINARY_NAME} (below): the role
is read by \`${BINARY_NAME} plan\` and run here with crash-restart supervision. Events are printed
as ${BINARY_NAME} prints them. The binary is $REMOTEINGRESS_BINARY, the workspace build, or
${BINARY_NAME} on PATH.
`;

/** What `remoteingress-bin plan hub` prints: what `remoteingress-bin hub` would start with. */
export interface IHubPlan {
  role: 'hub';
  config: IHubConfig;
  edges: TAllowedEdge[];
  egress: IEgressListenerConfig[];
  /** The files SIGHUP re-reads; null when there are none. */
  reload: { edgesFile?: string; configFile?: string } | null;
  json: boolean;
  logFormat: 'text' | 'json';
  workerThreads: number | null;
}

/** What `remoteingress-bin plan edge` prints. */
export interface IEdgePlan {
  role: 'edge';
  config: IEdgeConfig;
  json: boolean;
  logFormat: 'text' | 'json';
  workerThreads: number | null;
}

export type TPlan = IHubPlan | IEdgePlan;

export interface IRunCliOptions {
  /** Environment for the binary (its `REMOTEINGRESS_*` variables). Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Stops the running role like SIGTERM does (for embedding and tests). */
  signal?: AbortSignal;
  /** Install SIGINT/SIGTERM (and SIGHUP for a hub) handlers. Default true. */
  handleSignals?: boolean;
  /** Options for the hub/edge class (binary path, restart policy, ...). */
  wrapper?: IRemoteIngressOptions;
  /** Called with the plan the role is started from (a hub: again at each SIGHUP). */
  onPlan?: (plan: TPlan) => void;
  /** Start nothing: resolve 0 once `onPlan` has the plan (for tests of the grammar). */
  dryRun?: boolean;
}

/** The binary's exit status when it refused the command line (its message is already out). */
class BinaryExit extends Error {
  constructor(readonly code: number) {
    super(`${BINARY_NAME} exited with ${code}`);
  }
}

/**
 * Runs `remoteingress-bin ARGS` with `env`; its stderr is passed on, its stdout too unless
 * `capture` (then it is the result). Rejects with BinaryExit when it exits non-zero.
 */
async function binary(args: string[], options: IRunCliOptions, capture: boolean): Promise<string> {
  const path = await findBinary(options.wrapper?.binaryPath);
  if (path === null) throw new Error(`${BINARY_NAME} not found`);
  const out = options.stdout ?? process.stdout;
  const err = options.stderr ?? process.stderr;
  const child = spawn(path, args, { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let captured = '';
  child.stdout.on('data', (chunk: Buffer) => (capture ? (captured += chunk.toString()) : out.write(chunk.toString())));
  child.stderr.on('data', (chunk: Buffer) => err.write(chunk.toString()));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (status: number | null, signal: NodeJS.Signals | null) => resolve(status ?? (signal === null ? 1 : 128)));
  });
  if (code !== 0) throw new BinaryExit(code);
  return captured;
}

/** `remoteingress-bin plan ROLE ARGS`: what the binary would start with these arguments. */
export async function planRole(role: 'hub' | 'edge', args: string[], options: IRunCliOptions = {}): Promise<TPlan> {
  return JSON.parse(await binary(['plan', role, ...args], options, true)) as TPlan;
}

/**
 * Runs the CLI with `argv` (without `node` and the script). Resolves with the exit status once
 * the role has stopped (after SIGINT/SIGTERM or `options.signal`), or at once for the other
 * subcommands and for errors.
 */
export async function runCli(argv: string[] = process.argv.slice(2), options: IRunCliOptions = {}): Promise<number> {
  const env = options.env ?? process.env;
  const out = options.stdout ?? process.stdout;
  const err = options.stderr ?? process.stderr;
  // The subcommand comes after the binary's global flags, which `plan ROLE` also takes after ROLE.
  let at = 0;
  while (/^--(worker-threads|log-format)(=|$)/.test(argv[at] ?? '')) at += (argv[at] as string).includes('=') ? 1 : 2;
  const first = argv[at];
  const command = first !== undefined && !first.startsWith('-') ? first : undefined;
  const rest = [...argv.slice(0, at), ...argv.slice(at + 1)];
  const mode = env[MODE]?.trim();
  try {
    if (command === undefined && (argv.includes('--help') || argv.includes('-h'))) {
      out.write(`${USAGE}\n`);
      return await binary(['--help'], options, false).then(() => 0);
    }
    if (command === undefined && argv.includes('--version')) {
      const version = (await binary(['--version'], options, true)).trim();
      const ours = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
      out.write(`remoteingress ${ours.version}; ${version}\n`);
      return 0;
    }
    const role = command ?? mode;
    if (role !== 'hub' && role !== 'edge') return await binary(argv, options, false).then(() => 0);
    const args = command === undefined ? argv : rest;
    // `--help` is the role's: the binary's help for `hub` / `edge` names every flag.
    if (args.includes('--help') || args.includes('-h')) return await binary([role, ...args], options, false).then(() => 0);
    const plan = await planRole(role, args, options);
    options.onPlan?.(plan);
    if (options.dryRun === true) return 0;
    return await runRole(plan, args, options, out, err);
  } catch (error) {
    if (error instanceof BinaryExit) return error.code;
    err.write(`remoteingress: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

/** The role from `plan`, until SIGINT/SIGTERM, `options.signal` or a failed crash recovery. */
async function runRole(
  plan: TPlan,
  args: string[],
  options: IRunCliOptions,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<number> {
  // Flags of the process, not of the IPC config: the binary reads them from its environment.
  const env: Record<string, string> = { ...options.wrapper?.env, REMOTEINGRESS_LOG_FORMAT: plan.logFormat };
  if (plan.workerThreads !== null) env.REMOTEINGRESS_WORKER_THREADS = String(plan.workerThreads);
  const wrapper: IRemoteIngressOptions = { ...options.wrapper, env };
  const instance = plan.role === 'hub' ? new RemoteIngressHub(wrapper) : new RemoteIngressEdge(wrapper);
  const print = (name: string, data: unknown): void => {
    // As remoteingress-bin prints them: JSON lines on stdout, or log lines on stderr.
    const line = JSON.stringify({ event: name, data });
    if (plan.json) out.write(`${line}\n`);
    else err.write(`${new Date().toISOString()}  INFO remoteingress::event: ${line}\n`);
  };
  const emitter = instance as unknown as NodeJS.EventEmitter;
  for (const name of [...(plan.role === 'hub' ? HUB_EVENT_NAMES : EDGE_EVENT_NAMES), 'crashRecovered', 'ipcError']) {
    emitter.on(name, (data: unknown) => print(name, data));
  }
  emitter.on('log', (line: string) => err.write(`${line}\n`));
  let finish!: (code: number) => void;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  emitter.on('crashRecoveryFailed', (event: { error: Error }) => {
    print('crashRecoveryFailed', { error: event.error.message });
    finish(1);
  });
  let stopping = false;
  const stop = (why: string): void => {
    if (!stopping) err.write(`remoteingress: ${why}; stopping\n`);
    stopping = true;
    finish(0);
  };
  const onSignal = (signal: NodeJS.Signals): void => stop(`received ${signal}`);
  const handleSignals = options.handleSignals ?? true;
  const handlers: [NodeJS.Signals, () => void][] = [];
  const on = (signal: NodeJS.Signals, handler: () => void): void => {
    if (!handleSignals) return;
    handlers.push([signal, handler]);
    process.on(signal, handler);
  };
  on('SIGINT', () => onSignal('SIGINT'));
  on('SIGTERM', () => onSignal('SIGTERM'));
  options.signal?.addEventListener('abort', () => stop('aborted'), { once: true });
  try {
    if (plan.role === 'hub') {
      const hub = instance as RemoteIngressHub;
      const status = await hub.start(plan.config);
      await hub.updateAllowedEdges(plan.edges);
      const egress = egressListeners(hub);
      const failed = await egress(plan.egress);
      // A listener that cannot open is a configuration the hub cannot serve, as for the binary.
      if (failed.length > 0) {
        err.write(`remoteingress: ${failed.join('; ')}\n`);
        return EXIT_USAGE;
      }
      print('started', { role: 'hub', pid: hub.pid, tunnelPort: status.tunnelPort, certSha256: status.certSha256, allowedEdges: plan.edges.length });
      // SIGHUP: the plan again (the binary re-reads the files); its edges and listeners applied.
      const reload = async (): Promise<void> => {
        const again = (await planRole('hub', args, options).catch(() => undefined)) as IHubPlan | undefined;
        if (again === undefined) return void err.write('remoteingress: SIGHUP: not reloaded; the previous configuration stays\n');
        options.onPlan?.(again);
        const result = await hub.updateAllowedEdges(again.edges);
        print('edgesReloaded', { ...result, ...again.reload });
        for (const failure of await egress(again.egress)) err.write(`remoteingress: SIGHUP: ${failure}\n`);
        if (JSON.stringify(again.config) !== JSON.stringify(plan.config)) {
          err.write('remoteingress: SIGHUP: [hub] settings changed that need a restart to take effect\n');
        }
      };
      if (plan.reload !== null) {
        on('SIGHUP', () => void reload().catch((error: Error) => err.write(`remoteingress: SIGHUP: ${error.message}\n`)));
      }
      // The restarted binary has the config and the edges again, not the listeners.
      emitter.on('crashRecovered', () => void egress().then((failed) => failed.forEach((f) => err.write(`remoteingress: ${f}\n`))));
    } else {
      const status = await (instance as RemoteIngressEdge).start(plan.config);
      print('started', { role: 'edge', pid: instance.pid, edgeId: status.edgeId, hub: status.hub, transportMode: status.transportMode });
    }
    if (options.signal?.aborted) stop('aborted');
    return await finished;
  } catch (error) {
    err.write(`remoteingress: ${(error as Error).message}\n`);
    // The binary refused the start: a usage error, as `remoteingress-bin hub|edge` says it.
    return typeof (error as { code?: string }).code === 'string' && BINARY_REFUSALS.has((error as { code: string }).code) ? EXIT_USAGE : 1;
  } finally {
    for (const [signal, handler] of handlers) process.off(signal, handler);
    await instance.stop();
  }
}

/** IPC error codes of a start the binary refused (the daemon exits 64 on them). */
const BINARY_REFUSALS = new Set(['invalid_params', 'invalid_config', 'start_failed', 'bind_failed']);

/**
 * The hub's `[[egress]]` listeners: each call opens and closes them to match `wanted` (unchanged
 * ones stay open, as the binary does on SIGHUP) and resolves with what failed.
 */
function egressListeners(hub: RemoteIngressHub): (wanted?: IEgressListenerConfig[]) => Promise<string[]> {
  const open = new Map<string, string>();
  let last: IEgressListenerConfig[] = [];
  return async (wanted) => {
    // Without a list: after a crash, the last list again, none of it open any more.
    if (wanted === undefined) open.clear();
    wanted = last = wanted ?? last;
    const failed: string[] = [];
    const keys = new Set(wanted.map((entry) => JSON.stringify(entry)));
    for (const [key, id] of open) {
      if (keys.has(key)) continue;
      open.delete(key);
      await hub.stopEgressTcpListener(id).catch((error: Error) => failed.push(error.message));
    }
    for (const entry of wanted) {
      const key = JSON.stringify(entry);
      if (open.has(key)) continue;
      await hub.startEgressTcpListener(entry).then(
        (info) => open.set(key, info.listenerId),
        (error: Error) => failed.push(`egress listener ${entry.listenAddr}: ${error.message}`),
      );
    }
    return failed;
  };
}
