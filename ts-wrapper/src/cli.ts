// `remoteingress hub ...` / `remoteingress edge ...` / `remoteingress token ...`: the Node CLI.
//
// It drives the binary through RemoteIngressHub / RemoteIngressEdge (so it gets crash recovery),
// never through the binary's own CLI. Every flag can come from the `REMOTEINGRESS_*` variable of
// the reference readme (flags win), and `REMOTEINGRESS_MODE=hub|edge` picks the role when no
// subcommand is given. SIGINT/SIGTERM stop the role cleanly; a hub re-reads `--edges FILE` on
// SIGHUP.

import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { parseArgs, promisify } from 'node:util';

import { parse as parseToml } from 'smol-toml';

import { BINARY_NAME, findBinary } from './binary.js';

import { RemoteIngressEdge } from './edge.js';
import type { IEdgeConfig, IHubConfig, IPerformanceConfig, TAllowedEdge } from './generated/ipc.js';
import { RemoteIngressHub } from './hub.js';
import type { IRemoteIngressOptions } from './supervisor.js';
import { decodeConnectionToken, encodeConnectionToken } from './token.js';
import { EDGE_EVENT_NAMES, HUB_EVENT_NAMES } from './types.js';

/** Exit status for a usage or configuration error (sysexits EX_USAGE, as the Rust CLI). */
export const EXIT_USAGE = 64;

export const ENV = {
  MODE: 'REMOTEINGRESS_MODE',
  TOKEN: 'REMOTEINGRESS_TOKEN',
  HUB_HOST: 'REMOTEINGRESS_HUB_HOST',
  HUB_PORT: 'REMOTEINGRESS_HUB_PORT',
  EDGE_ID: 'REMOTEINGRESS_EDGE_ID',
  SECRET: 'REMOTEINGRESS_SECRET',
  TARGET_HOST: 'REMOTEINGRESS_TARGET_HOST',
  TUNNEL_PORT: 'REMOTEINGRESS_TUNNEL_PORT',
  TUNNEL_BIND: 'REMOTEINGRESS_TUNNEL_BIND',
  ALLOWED_EDGES_JSON: 'REMOTEINGRESS_ALLOWED_EDGES_JSON',
  EDGES_FILE: 'REMOTEINGRESS_EDGES_FILE',
  PERFORMANCE_JSON: 'REMOTEINGRESS_PERFORMANCE_JSON',
  STREAM_EVENT_MODE: 'REMOTEINGRESS_STREAM_EVENT_MODE',
  PROXY_PROTOCOL: 'REMOTEINGRESS_PROXY_PROTOCOL',
  TLS_CERT: 'REMOTEINGRESS_TLS_CERT',
  TLS_KEY: 'REMOTEINGRESS_TLS_KEY',
  TRANSPORT_MODE: 'REMOTEINGRESS_TRANSPORT_MODE',
  BIND_ADDRESS: 'REMOTEINGRESS_BIND_ADDRESS',
  HUB_CERT_SHA256: 'REMOTEINGRESS_HUB_CERT_SHA256',
  HUB_CA: 'REMOTEINGRESS_HUB_CA',
  STATE_DIR: 'REMOTEINGRESS_STATE_DIR',
  SHUTDOWN_GRACE_SECS: 'REMOTEINGRESS_SHUTDOWN_GRACE_SECS',
  METRICS_ADDR: 'REMOTEINGRESS_METRICS_ADDR',
  STUN_SERVERS: 'REMOTEINGRESS_STUN_SERVERS',
  WORKER_THREADS: 'REMOTEINGRESS_WORKER_THREADS',
  CONFIG: 'REMOTEINGRESS_CONFIG',
  TOKEN_FILE: 'REMOTEINGRESS_TOKEN_FILE',
  SECRET_FILE: 'REMOTEINGRESS_SECRET_FILE',
  LOG_FORMAT: 'REMOTEINGRESS_LOG_FORMAT',
} as const;

const USAGE = `Usage:
  remoteingress hub  [--config FILE.toml] [--tunnel-port 8443] [--tunnel-bind ADDRESS]
                     [--target-host 127.0.0.1]
                     [--edges FILE.json | --allowed-edges-json JSON] [--tls-cert PEM --tls-key PEM]
                     [--state-dir DIR]
                     [--stream-event-mode perStream|summary|off]
                     [--proxy-protocol v1|v2|none]
                     [--performance-json JSON] [--shutdown-grace-secs 10]
                     [--metrics-addr ADDR:PORT] [--worker-threads N] [--log-format text|json]
                     [--json]
  remoteingress edge [--config FILE.toml] --token TOKEN | --token-file FILE
                     | --hub-host H [--hub-port 8443] --edge-id ID (--secret S | --secret-file FILE)
                     [--transport-mode tcpTls|quic|quicWithFallback] [--bind-address ADDR]
                     [--hub-cert-sha256 HEX] [--hub-ca PEM] [--shutdown-grace-secs 10]
                     [--stun-server HOST:PORT ... | --no-stun] [--metrics-addr ADDR:PORT]
                     [--worker-threads N] [--log-format text|json] [--json]
  remoteingress token encode --hub-host H [--hub-port 8443] --edge-id ID --secret S
                     [--hub-cert-sha256 HEX]
  remoteingress token decode TOKEN
  remoteingress token issue (--edges FILE.json | --config FILE.toml) --edge-id ID --hub-host H
                     [--hub-port P] [--state-dir DIR]
  remoteingress secret new
  remoteingress schema | --version

Without a subcommand, REMOTEINGRESS_MODE=hub|edge picks the role. Every hub/edge flag can also be
set with its REMOTEINGRESS_* variable (e.g. --target-host: REMOTEINGRESS_TARGET_HOST); flags win.
Events are log lines on stderr, or with --json one JSON line each on stdout, as remoteingress-bin
prints them; the binary's log goes to stderr.
The binary is $REMOTEINGRESS_BINARY, the workspace build, or remoteingress-bin on PATH.`;

class UsageError extends Error {}

/** This package's version (the binary reports its own). */
const PACKAGE_VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/**
 * Runs the binary's own subcommand (`token issue`, `secret new`): it reads the hub's files and
 * state directory itself, so they are not reimplemented here. Its stdout and stderr are passed
 * on; resolves with its exit status.
 */
async function passToBinary(
  args: string[],
  options: IRunCliOptions,
  env: NodeJS.ProcessEnv,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<number> {
  const binary = await findBinary(options.wrapper?.binaryPath);
  if (binary === null) throw new Error(`${BINARY_NAME} not found`);
  const child = spawn(binary, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (chunk: Buffer) => out.write(chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => err.write(chunk.toString()));
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  return code ?? (signal === null ? 1 : 128);
}

/** What the binary prints for `args` (`schema`, `--version`). */
async function fromBinary(args: string[], options: IRunCliOptions): Promise<string> {
  const binary = await findBinary(options.wrapper?.binaryPath);
  if (binary === null) throw new Error(`${BINARY_NAME} not found`);
  const { stdout } = await promisify(execFile)(binary, args, { maxBuffer: 16 << 20 });
  return stdout;
}

export interface IRunCliOptions {
  /** Environment to read `REMOTEINGRESS_*` from. Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  /** Stops the running role like SIGTERM does (for embedding and tests). */
  signal?: AbortSignal;
  /** Install SIGINT/SIGTERM (and SIGHUP for a hub) handlers. Default true. */
  handleSignals?: boolean;
  /** Options for the hub/edge class (binary path, restart policy, ...). */
  wrapper?: IRemoteIngressOptions;
}

const HUB_OPTIONS = {
  config: { type: 'string' },
  'log-format': { type: 'string' },
  'tunnel-port': { type: 'string' },
  'tunnel-bind': { type: 'string' },
  'target-host': { type: 'string' },
  edges: { type: 'string' },
  'allowed-edges-json': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'state-dir': { type: 'string' },
  'stream-event-mode': { type: 'string' },
  'proxy-protocol': { type: 'string' },
  'performance-json': { type: 'string' },
  'shutdown-grace-secs': { type: 'string' },
  'metrics-addr': { type: 'string' },
  'worker-threads': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const EDGE_OPTIONS = {
  config: { type: 'string' },
  'log-format': { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  'secret-file': { type: 'string' },
  'hub-host': { type: 'string' },
  'hub-port': { type: 'string' },
  'edge-id': { type: 'string' },
  secret: { type: 'string' },
  'transport-mode': { type: 'string' },
  'bind-address': { type: 'string' },
  'hub-cert-sha256': { type: 'string' },
  'hub-ca': { type: 'string' },
  'shutdown-grace-secs': { type: 'string' },
  'metrics-addr': { type: 'string' },
  'stun-server': { type: 'string', multiple: true },
  'no-stun': { type: 'boolean' },
  'worker-threads': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const TOKEN_OPTIONS = {
  'hub-host': { type: 'string' },
  'hub-port': { type: 'string' },
  'edge-id': { type: 'string' },
  secret: { type: 'string' },
  'hub-cert-sha256': { type: 'string' },
  // The old name, kept as an alias.
  'cert-sha256': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value;
}

/** A flag's value, else its environment variable's. */
function pick(flag: string | undefined, env: NodeJS.ProcessEnv, name: string): string | undefined {
  return nonEmpty(flag) ?? nonEmpty(env[name]);
}

/**
 * `--log-format` (or its variable): text or json. Checked here, like `--worker-threads`, because
 * it is a flag of the process, not a config field: the binary would refuse it at spawn, before
 * it could name it in an error the CLI passes on.
 */
function logFormat(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  const format = pick(flag, env, ENV.LOG_FORMAT);
  if (format !== undefined && format !== 'text' && format !== 'json') {
    throw new UsageError(`--log-format: ${JSON.stringify(format)} is not one of text, json`);
  }
  return format;
}

/** `--worker-threads` (or its variable): 1-1024, as the binary accepts. */
function workerThreads(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  const text = pick(flag, env, ENV.WORKER_THREADS)?.trim();
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 1024) {
    throw new UsageError(`--worker-threads must be 1-1024 (got ${JSON.stringify(text)})`);
  }
  return text;
}

/**
 * A flag's text as the whole number the config field holds. Ranges and enum values are the
 * binary's to check: its `invalid_params` / `invalid_config` errors name the field, and exit 64.
 */
function whole(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${what} must be a whole number (got ${JSON.stringify(text)})`);
  return Number(text.trim());
}

function json<T>(text: string | undefined, what: string, check: (value: unknown) => boolean, expected: string): T | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${what}: not valid JSON (${(error as Error).message})`);
  }
  if (!check(value)) throw new UsageError(`${what}: must be ${expected}`);
  return value as T;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new UsageError(`${what}: cannot read ${path}: ${(error as Error).message}`);
  }
}

function isObject(value: unknown): boolean {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `--config FILE.toml`: the binary's configuration file ([hub], [[edges]], [edge]). */
interface IConfigFile {
  hub?: IHubConfig;
  edges?: TAllowedEdge[];
  edge?: IEdgeConfig;
}

function readConfig(file: string | undefined): IConfigFile {
  if (file === undefined) return {};
  const text = readText(file, '--config');
  let parsed: unknown;
  try {
    parsed = parseToml(text);
  } catch (error) {
    // smol-toml's TomlError carries the line, like the binary's `FILE:LINE:` messages.
    const line = (error as { line?: number }).line;
    throw new UsageError(`${file}:${line === undefined ? '' : `${line}:`} ${(error as Error).message.split('\n')[0]}`);
  }
  const known = new Set(['hub', 'edges', 'edge']);
  const unknown = Object.keys(parsed as object).filter((key) => !known.has(key));
  if (unknown.length > 0) throw new UsageError(`${file}: unknown table ${JSON.stringify(unknown[0])} (expected hub, edges, edge)`);
  // Plain JSON values, as the binary takes them; it checks the fields and names the JSON path of
  // a bad one.
  return JSON.parse(JSON.stringify(parsed)) as IConfigFile;
}

/** A secret kept in a file, without its trailing newline. */
function readSecret(path: string, what: string): string {
  return readText(path, what).replace(/[\r\n]+$/, '');
}

function readEdges(file: string): TAllowedEdge[] {
  return json<TAllowedEdge[]>(readText(file, '--edges'), `--edges ${file}`, Array.isArray, 'a JSON array of edges') ?? [];
}

interface IHubPlan {
  config: IHubConfig;
  edges: TAllowedEdge[] | undefined;
  edgesFile: string | undefined;
  /** `--config`: re-read on SIGHUP for its edges when no edges file is given. */
  configFile: string | undefined;
  /** `--log-format`, passed to the binary. */
  logFormat: string | undefined;
  json: boolean;
  /** `--worker-threads`, passed to the binary as REMOTEINGRESS_WORKER_THREADS. */
  workerThreads: string | undefined;
}

export function parseHubArgs(args: string[], env: NodeJS.ProcessEnv): IHubPlan | 'help' {
  const { values } = parseArgs({ args, options: HUB_OPTIONS, strict: true, allowPositionals: false });
  if (values.help) return 'help';
  const configFile = pick(values.config, env, ENV.CONFIG);
  const file = readConfig(configFile);
  // The file first; every flag or variable given overrides it.
  const config: IHubConfig = { ...file.hub };
  const tunnelPort = whole(pick(values['tunnel-port'], env, ENV.TUNNEL_PORT), '--tunnel-port');
  if (tunnelPort !== undefined) config.tunnelPort = tunnelPort;
  const tunnelBind = pick(values['tunnel-bind'], env, ENV.TUNNEL_BIND);
  if (tunnelBind !== undefined) config.tunnelBindAddress = tunnelBind;
  const targetHost = pick(values['target-host'], env, ENV.TARGET_HOST);
  if (targetHost !== undefined) config.targetHost = targetHost;
  // Enum values go to the binary as given: it refuses others, naming the field.
  const mode = pick(values['stream-event-mode'], env, ENV.STREAM_EVENT_MODE);
  if (mode !== undefined) config.streamEventMode = mode as IHubConfig['streamEventMode'];
  const proxy = pick(values['proxy-protocol'], env, ENV.PROXY_PROTOCOL);
  if (proxy !== undefined) config.proxyProtocol = proxy as IHubConfig['proxyProtocol'];
  const performance = json<IPerformanceConfig>(
    pick(values['performance-json'], env, ENV.PERFORMANCE_JSON),
    '--performance-json',
    isObject,
    'a JSON object (IPerformanceConfig)',
  );
  if (performance !== undefined) config.performance = performance;
  const cert = pick(values['tls-cert'], env, ENV.TLS_CERT);
  const key = pick(values['tls-key'], env, ENV.TLS_KEY);
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
  if (cert !== undefined && key !== undefined) {
    config.tls = { certPem: readText(cert, '--tls-cert'), keyPem: readText(key, '--tls-key') };
  }
  const stateDir = pick(values['state-dir'], env, ENV.STATE_DIR);
  if (stateDir !== undefined) config.stateDir = stateDir;
  const grace = whole(pick(values['shutdown-grace-secs'], env, ENV.SHUTDOWN_GRACE_SECS), '--shutdown-grace-secs');
  if (grace !== undefined) config.shutdownGraceSecs = grace;
  const metricsAddr = pick(values['metrics-addr'], env, ENV.METRICS_ADDR);
  if (metricsAddr !== undefined) config.metricsAddr = metricsAddr;
  const edgesFile = pick(values.edges, env, ENV.EDGES_FILE);
  const inline = pick(values['allowed-edges-json'], env, ENV.ALLOWED_EDGES_JSON);
  if (edgesFile !== undefined && inline !== undefined) {
    throw new UsageError('give the allowed edges either as --edges FILE or as --allowed-edges-json, not both');
  }
  const edges =
    edgesFile !== undefined
      ? readEdges(edgesFile)
      : (json<TAllowedEdge[]>(inline, '--allowed-edges-json', Array.isArray, 'a JSON array of edges') ?? file.edges);
  return {
    config,
    edges,
    edgesFile,
    configFile,
    logFormat: logFormat(values['log-format'], env),
    json: values.json === true,
    workerThreads: workerThreads(values['worker-threads'], env),
  };
}

interface IEdgePlan {
  config: IEdgeConfig;
  json: boolean;
  logFormat: string | undefined;
  workerThreads: string | undefined;
}

export function parseEdgeArgs(args: string[], env: NodeJS.ProcessEnv): IEdgePlan | 'help' {
  const { values } = parseArgs({ args, options: EDGE_OPTIONS, strict: true, allowPositionals: false });
  if (values.help) return 'help';
  const file = readConfig(pick(values.config, env, ENV.CONFIG));
  const config: IEdgeConfig = { ...file.edge };
  const tokenFile = pick(values['token-file'], env, ENV.TOKEN_FILE);
  const secretFile = pick(values['secret-file'], env, ENV.SECRET_FILE);
  const token = nonEmpty(values.token) ?? (values['token-file'] !== undefined ? readSecret(values['token-file'], '--token-file') : undefined);
  const hubHost = nonEmpty(values['hub-host']);
  const explicit =
    hubHost !== undefined || values['edge-id'] !== undefined || values.secret !== undefined || values['secret-file'] !== undefined;
  if (token !== undefined && explicit) {
    throw new UsageError('give either --token or --hub-host/--edge-id/--secret, not both');
  }
  // A token flag wins over explicit variables and the other way round; from the environment
  // alone, a token wins; both win over the file.
  const envToken = explicit
    ? undefined
    : (nonEmpty(env[ENV.TOKEN]) ?? (tokenFile !== undefined ? readSecret(tokenFile, ENV.TOKEN_FILE) : undefined));
  const fileHasEdge = config.token !== undefined || config.hubHost !== undefined;
  if (token !== undefined || envToken !== undefined) {
    config.token = (token ?? envToken) as string;
    delete config.hubHost;
    delete config.hubPort;
    delete config.edgeId;
    delete config.secret;
  } else {
    const host = pick(values['hub-host'], env, ENV.HUB_HOST) ?? config.hubHost;
    const edgeId = pick(values['edge-id'], env, ENV.EDGE_ID) ?? config.edgeId;
    const secret =
      pick(values.secret, env, ENV.SECRET) ?? (secretFile !== undefined ? readSecret(secretFile, '--secret-file') : undefined) ?? config.secret;
    if (config.token === undefined || explicit) {
      const missing = [
        host === undefined ? `--hub-host (${ENV.HUB_HOST})` : undefined,
        edgeId === undefined ? `--edge-id (${ENV.EDGE_ID})` : undefined,
        secret === undefined ? `--secret (${ENV.SECRET})` : undefined,
      ].filter((m) => m !== undefined);
      if (missing.length > 0) {
        throw new UsageError(`an edge needs --token (${ENV.TOKEN}) or ${missing.join(', ')}${fileHasEdge ? '' : ' (or a --config file with them)'}`);
      }
      delete config.token;
      config.hubHost = host as string;
      config.edgeId = edgeId as string;
      config.secret = secret as string;
    }
    const hubPort = whole(pick(values['hub-port'], env, ENV.HUB_PORT), '--hub-port');
    if (hubPort !== undefined) config.hubPort = hubPort;
  }
  const fingerprint = pick(values['hub-cert-sha256'], env, ENV.HUB_CERT_SHA256);
  if (fingerprint !== undefined) config.hubCertSha256 = fingerprint;
  const ca = pick(values['hub-ca'], env, ENV.HUB_CA);
  if (ca !== undefined) config.hubCaPem = readText(ca, '--hub-ca');
  const transport = pick(values['transport-mode'], env, ENV.TRANSPORT_MODE);
  if (transport !== undefined) config.transportMode = transport as IEdgeConfig['transportMode'];
  const bind = pick(values['bind-address'], env, ENV.BIND_ADDRESS);
  if (bind !== undefined) config.bindAddress = bind;
  const grace = whole(pick(values['shutdown-grace-secs'], env, ENV.SHUTDOWN_GRACE_SECS), '--shutdown-grace-secs');
  if (grace !== undefined) config.shutdownGraceSecs = grace;
  const metricsAddr = pick(values['metrics-addr'], env, ENV.METRICS_ADDR);
  if (metricsAddr !== undefined) config.metricsAddr = metricsAddr;
  const stunServers = values['stun-server'] ?? nonEmpty(env[ENV.STUN_SERVERS])?.split(',').map((s) => s.trim());
  if (values['no-stun'] === true && values['stun-server'] !== undefined) {
    throw new UsageError('give either --stun-server or --no-stun, not both');
  }
  if (values['no-stun'] === true) config.stunServers = [];
  else if (stunServers !== undefined) config.stunServers = stunServers;
  return {
    config,
    json: values.json === true,
    logFormat: logFormat(values['log-format'], env),
    workerThreads: workerThreads(values['worker-threads'], env),
  };
}

function runToken(args: string[], out: NodeJS.WritableStream): number {
  const [action, ...rest] = args;
  if (action === 'decode') {
    const { positionals } = parseArgs({ args: rest, options: {}, strict: true, allowPositionals: true });
    if (positionals.length !== 1) throw new UsageError('token decode takes exactly one TOKEN');
    const data = decodeConnectionToken(positionals[0] as string);
    out.write(`${JSON.stringify({ ...data, hubCertSha256: data.hubCertSha256 ?? null })}\n`);
    return 0;
  }
  if (action === 'encode') {
    const { values } = parseArgs({ args: rest, options: TOKEN_OPTIONS, strict: true });
    const need = (value: string | undefined, flag: string): string => {
      if (value === undefined) throw new UsageError(`token encode needs ${flag}`);
      return value;
    };
    const fingerprint = values['hub-cert-sha256'] ?? values['cert-sha256'];
    const token = encodeConnectionToken({
      hubHost: need(values['hub-host'], '--hub-host'),
      hubPort: whole(values['hub-port'], '--hub-port') ?? 8443,
      edgeId: need(values['edge-id'], '--edge-id'),
      secret: need(values.secret, '--secret'),
      ...(fingerprint === undefined ? {} : { hubCertSha256: fingerprint }),
    });
    out.write(`${token}\n`);
    return 0;
  }
  throw new UsageError('token needs "encode", "decode" or "issue"');
}

/**
 * Runs the CLI with `argv` (without `node` and the script). Resolves with the exit status once
 * the role has stopped (after SIGINT/SIGTERM or `options.signal`), or at once for `token` and
 * usage errors.
 */
export async function runCli(argv: string[] = process.argv.slice(2), options: IRunCliOptions = {}): Promise<number> {
  const env = options.env ?? process.env;
  const out = options.stdout ?? process.stdout;
  const err = options.stderr ?? process.stderr;
  const args = [...argv];
  let command = args[0] !== undefined && !args[0].startsWith('-') ? args.shift() : undefined;
  if (command === undefined && (args.includes('--help') || args.includes('-h'))) {
    out.write(`${USAGE}\n`);
    return 0;
  }
  if (command === undefined && args.includes('--version')) {
    try {
      out.write(`remoteingress ${PACKAGE_VERSION}; ${(await fromBinary(['--version'], options)).trim()}\n`);
      return 0;
    } catch (error) {
      err.write(`remoteingress: ${error instanceof Error ? error.message : String(error)}\n`);
      return 1;
    }
  }
  command ??= nonEmpty(env[ENV.MODE])?.trim();
  try {
    switch (command) {
      case 'hub': {
        const plan = parseHubArgs(args, env);
        if (plan === 'help') break;
        return await runRole('hub', plan, plan.json, options, out, err);
      }
      case 'edge': {
        const plan = parseEdgeArgs(args, env);
        if (plan === 'help') break;
        return await runRole('edge', plan, plan.json, options, out, err);
      }
      case 'token':
        if (args[0] === 'issue') return await passToBinary(['token', ...args], options, env, out, err);
        return runToken(args, out);
      case 'secret':
        return await passToBinary(['secret', ...args], options, env, out, err);
      case 'schema':
        out.write(await fromBinary(['schema'], options));
        return 0;
      case undefined:
        throw new UsageError(`nothing to do: give a subcommand (hub, edge, token, secret, schema) or set ${ENV.MODE}=hub|edge`);
      default:
        throw new UsageError(
          `unknown ${env[ENV.MODE] !== undefined && argv[0] !== command ? `${ENV.MODE} ` : 'subcommand '}${JSON.stringify(command)}; expected hub, edge, token, secret or schema`,
        );
    }
    out.write(`${USAGE}\n`);
    return 0;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const usage = error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    const tokenError = (error as Error).name === 'ConnectionTokenError';
    err.write(`remoteingress: ${message}\n`);
    if (usage) err.write(`Run \`remoteingress --help\` for usage.\n`);
    return usage || tokenError ? EXIT_USAGE : 1;
  }
}

async function runRole(
  role: 'hub' | 'edge',
  plan: IHubPlan | IEdgePlan,
  asJson: boolean,
  options: IRunCliOptions,
  out: NodeJS.WritableStream,
  err: NodeJS.WritableStream,
): Promise<number> {
  const wrapper: IRemoteIngressOptions = { ...options.wrapper };
  if (plan.workerThreads !== undefined) {
    wrapper.env = { ...wrapper.env, [ENV.WORKER_THREADS]: plan.workerThreads };
  }
  if (plan.logFormat !== undefined) {
    wrapper.env = { ...wrapper.env, [ENV.LOG_FORMAT]: plan.logFormat };
  }
  const instance = role === 'hub' ? new RemoteIngressHub(wrapper) : new RemoteIngressEdge(wrapper);
  const print = (name: string, data: unknown): void => {
    // As remoteingress-bin prints them: JSON lines on stdout, or log lines on stderr.
    const line = JSON.stringify({ event: name, data });
    if (asJson) out.write(`${line}\n`);
    else err.write(`${new Date().toISOString()}  INFO remoteingress::event: ${line}\n`);
  };
  const emitter = instance as unknown as NodeJS.EventEmitter;
  const names: readonly string[] = role === 'hub' ? HUB_EVENT_NAMES : EDGE_EVENT_NAMES;
  for (const name of [...names, 'crashRecovered', 'ipcError']) {
    emitter.on(name, (data: unknown) => print(name, data));
  }
  emitter.on('log', (line: string) => err.write(`${line}\n`));

  let finish!: (code: number) => void;
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });
  emitter.on('crashRecoveryFailed', (event: { error: Error }) => {
    print('crashRecoveryFailed', { error: event.error.message });
    finish(1);
  });

  let stopping = false;
  const stop = (why: string): void => {
    if (stopping) return;
    stopping = true;
    err.write(`remoteingress: ${why}; stopping\n`);
    finish(0);
  };
  const onSignal = (signal: NodeJS.Signals): void => stop(`received ${signal}`);
  const handleSignals = options.handleSignals ?? true;
  let onHup: (() => void) | undefined;
  if (handleSignals) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  options.signal?.addEventListener('abort', () => stop('aborted'), { once: true });

  try {
    if (role === 'hub') {
      const hub = instance as RemoteIngressHub;
      const hubPlan = plan as IHubPlan;
      const status = await hub.start(hubPlan.config);
      if (hubPlan.edges !== undefined) await hub.updateAllowedEdges(hubPlan.edges);
      print('started', {
        role,
        pid: hub.pid,
        tunnelPort: status.tunnelPort,
        certSha256: status.certSha256,
        // The edges it loaded, as the binary's started status counts them.
        allowedEdges: hubPlan.edges?.length ?? 0,
      });
      // SIGHUP re-reads the edges: from the edges file, else from the config file.
      const reloadFrom = hubPlan.edgesFile ?? hubPlan.configFile;
      if (handleSignals && reloadFrom !== undefined) {
        const file = reloadFrom;
        const fromEdgesFile = hubPlan.edgesFile !== undefined;
        onHup = (): void => {
          try {
            const edges = fromEdgesFile ? readEdges(file) : (readConfig(file).edges ?? []);
            hub.updateAllowedEdges(edges).then(
              (result) => print('edgesReloaded', { file, ...result }),
              (error: Error) => err.write(`remoteingress: reloading ${file} failed: ${error.message}\n`),
            );
          } catch (error) {
            err.write(`remoteingress: reloading ${file} failed: ${(error as Error).message}\n`);
          }
        };
        process.on('SIGHUP', onHup);
      }
    } else {
      const edge = instance as RemoteIngressEdge;
      const status = await edge.start((plan as IEdgePlan).config);
      print('started', { role, pid: edge.pid, edgeId: status.edgeId, hub: status.hub, transportMode: status.transportMode });
    }
    if (options.signal?.aborted) stop('aborted');
    return await finished;
  } catch (error) {
    err.write(`remoteingress: ${(error as Error).message}\n`);
    // A configuration the binary refuses is a usage error, like in the Rust CLI.
    const code = (error as { code?: string }).code;
    return code === 'invalid_config' || code === 'invalid_params' ? EXIT_USAGE : 1;
  } finally {
    if (handleSignals) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (onHup !== undefined) process.off('SIGHUP', onHup);
    }
    await instance.stop();
  }
}
