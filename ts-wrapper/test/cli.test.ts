// One CLI grammar: for a table of command lines and environments, what `remoteingress` (the
// TypeScript CLI) starts is what `remoteingress-bin plan` says the Rust daemon would start, and a
// command line the daemon refuses is refused by both with the same message and exit status 64.
// Then a real hub started through the TypeScript CLI listens where its plan says, opens its
// `[[egress]]` listener, and re-reads its edges file on SIGHUP.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { EXIT_USAGE, encodeConnectionToken, runCli, type TAllowedEdge } from '../src/index.js';
import type { IHubPlan, TPlan } from '../src/cli.js';
import { binaryPath, eventually } from './helpers.js';

const SECRET = 's3cret-0123456789abc';
const EDGES: TAllowedEdge[] = [{ id: 'a', secret: SECRET, listenPorts: [8080] }];

/** A command line and environment, as an operator would give them to either CLI. */
interface ICase {
  name: string;
  argv: string[];
  env?: Record<string, string>;
}

function output(chunks: string[]): NodeJS.WritableStream {
  return { write: (chunk: string) => chunks.push(String(chunk)) } as unknown as NodeJS.WritableStream;
}

/** The lines that say what went wrong (clap's `error:`, the daemon's `remoteingress-bin:`). */
function said(stderr: string): string[] {
  return stderr.split('\n').filter((line) => line.startsWith('error:') || line.startsWith('remoteingress-bin:'));
}

/** A TCP port nothing listens on now. */
async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('one CLI grammar: remoteingress and remoteingress-bin', () => {
  let binary: string;
  let dir: string;
  let env: Record<string, string>;
  const file = (name: string, text: string): string => {
    const where = path.join(dir, name);
    writeFileSync(where, text, { mode: 0o600 });
    return where;
  };
  before(async () => {
    binary = await binaryPath();
    dir = mkdtempSync(path.join(tmpdir(), 'ri-cli-parity-'));
    // Only what the test gives: no operator's REMOTEINGRESS_* variables; state under `dir`.
    env = { PATH: process.env.PATH ?? '', HOME: dir, XDG_STATE_HOME: path.join(dir, 'state') };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** `remoteingress-bin ARGS` with the case's environment, bounded: a refusal comes at once. */
  const bin = (args: string[], extra: Record<string, string> = {}) => {
    const ran = spawnSync(binary, args, { env: { ...env, ...extra }, encoding: 'utf8', timeout: 20_000 });
    return { code: ran.status, stdout: ran.stdout, stderr: ran.stderr };
  };
  /** What the TypeScript CLI would start for the case (nothing is started), or its refusal. */
  const ts = async (c: ICase) => {
    const err: string[] = [];
    let plan: TPlan | undefined;
    const code = await runCli(c.argv, {
      env: { ...env, ...c.env },
      stdout: output([]),
      stderr: output(err),
      dryRun: true,
      handleSignals: false,
      onPlan: (p) => (plan = p),
    });
    return { code, plan, stderr: err.join('') };
  };
  /** The `plan` command line for what the operator typed (the role from the argv or the mode). */
  const planArgv = (c: ICase): string[] => {
    const at = c.argv.findIndex((word) => word === 'hub' || word === 'edge');
    if (at < 0) return ['plan', c.env?.REMOTEINGRESS_MODE ?? '', ...c.argv];
    return ['plan', c.argv[at] as string, ...c.argv.slice(0, at), ...c.argv.slice(at + 1)];
  };

  test('the TypeScript CLI starts what the Rust daemon would start', { timeout: 60_000 }, async () => {
    const token = encodeConnectionToken({ hubHost: 'hub.example.com', hubPort: 9443, edgeId: 'e1', secret: SECRET });
    const hubToml = file(
      'hub.toml',
      `[hub]\ntunnelPort = 9443\ntargetHost = "10.0.0.5"\n\n[[edges]]\nid = "a"\nsecret = "${SECRET}"\nlistenPorts = [80]\n\n` +
        '[[egress]]\nlistenAddr = "127.0.0.1:2525"\nedgeId = "a"\nlogicalHost = "mx.example.com"\nport = 25\n',
    );
    const edgesJson = file('edges.json', JSON.stringify([...EDGES, { id: 'b', secret: SECRET, listenPortsUdp: [53] }]));
    const edgeToml = file('edge.toml', `[edge]\nhubHost = "h"\nedgeId = "e"\nsecret = "${SECRET}"\ntransportMode = "tcpTls"\n`);
    const tokenFile = file('token', `${token}\n`);
    const secretFile = file('secret', `${SECRET}\n`);
    const cases: ICase[] = [
      {
        name: 'hub: every kind of flag',
        argv: ['hub', '--tunnel-port', '9444', '--tunnel-bind', '127.0.0.1', '--target-host', '10.0.0.7',
          '--stream-event-mode', 'summary', '--proxy-protocol', 'v2', '--shutdown-grace-secs', '3',
          '--metrics-addr', '127.0.0.1:9100', '--performance-json', '{}', '--state-dir', path.join(dir, 's1'),
          '--allowed-edges-json', JSON.stringify(EDGES), '--json', '--worker-threads', '2', '--log-format', 'json'],
      },
      {
        name: 'hub: variables',
        argv: ['hub'],
        env: {
          REMOTEINGRESS_TUNNEL_PORT: '9445', REMOTEINGRESS_TARGET_HOST: '10.0.0.8', REMOTEINGRESS_STREAM_EVENT_MODE: 'off',
          REMOTEINGRESS_ALLOWED_EDGES_JSON: JSON.stringify(EDGES), REMOTEINGRESS_WORKER_THREADS: '3',
        },
      },
      { name: 'hub: TOML file, a flag over it', argv: ['hub', '--config', hubToml, '--tunnel-port', '9446'] },
      { name: 'hub: a flag over its variable', argv: ['hub', '--target-host', '10.0.0.9'], env: { REMOTEINGRESS_TARGET_HOST: '10.0.0.1' } },
      { name: 'hub: edges file (variable) over the TOML edges', argv: ['hub', '--config', hubToml], env: { REMOTEINGRESS_EDGES_FILE: edgesJson } },
      { name: 'hub: REMOTEINGRESS_MODE, no subcommand', argv: ['--edges', edgesJson], env: { REMOTEINGRESS_MODE: 'hub' } },
      { name: 'edge: token', argv: ['edge', '--token', token, '--no-stun', '--transport-mode', 'quic'] },
      { name: 'edge: global flags before the subcommand', argv: ['--log-format', 'json', '--worker-threads=2', 'edge', '--token', token] },
      {
        name: 'edge: explicit hub, id and secret',
        argv: ['edge', '--hub-host', 'h.example.com', '--hub-port', '7000', '--edge-id', 'e2', '--secret', SECRET,
          '--bind-address', '127.0.0.2', '--stun-server', 'a:1', '--stun-server', 'b:2', '--hub-cert-sha256', 'ab'.repeat(32)],
      },
      {
        name: 'edge: variables and a secret file',
        argv: ['edge'],
        env: { REMOTEINGRESS_HUB_HOST: 'h', REMOTEINGRESS_EDGE_ID: 'e3', REMOTEINGRESS_SECRET_FILE: secretFile, REMOTEINGRESS_STUN_SERVERS: 'x:1,y:2' },
      },
      { name: 'edge: TOML file', argv: ['edge', '--config', edgeToml, '--metrics-addr', '127.0.0.1:9101'] },
      { name: 'edge: a token file replaces the TOML hub and id', argv: ['edge', '--config', edgeToml, '--token-file', tokenFile] },
      { name: 'edge: the token variable (REMOTEINGRESS_MODE)', argv: ['--json'], env: { REMOTEINGRESS_MODE: 'edge', REMOTEINGRESS_TOKEN: token } },
    ];
    // The TLS files, when openssl is there to make a certificate (the plan checks the PEM).
    const [cert, key] = [path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')];
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-subj', '/CN=hub', '-days', '1'], { stdio: 'ignore' });
    if (made.status === 0) {
      chmodSync(key, 0o600);
      cases.push({ name: 'hub: TLS files from variables', argv: ['hub'], env: { REMOTEINGRESS_TLS_CERT: cert, REMOTEINGRESS_TLS_KEY: key } });
    }
    for (const c of cases) {
      const rust = bin(planArgv(c), c.env);
      assert.equal(rust.code, 0, `${c.name}: ${rust.stderr}`);
      const node = await ts(c);
      assert.equal(node.code, 0, `${c.name}: ${node.stderr}`);
      assert.deepEqual(node.plan, JSON.parse(rust.stdout), c.name);
    }
  });

  test('a command line the daemon refuses: the same message and exit 64 from both', { timeout: 120_000 }, async () => {
    const badEdges = file('bad.json', `[\n  {"id":"a","secret":"${SECRET}"},\n  {"id":"b",\n   "secret":"short"}\n]\n`);
    const badToml = file('bad.toml', '[edge]\nhubHost = \n');
    const cases: ICase[] = [
      { name: 'edges file and inline edges', argv: ['hub', '--edges', badEdges, '--allowed-edges-json', '[]'] },
      { name: 'token and explicit hub', argv: ['edge', '--token', 't', '--hub-host', 'h'] },
      { name: 'token variable and explicit id', argv: ['edge', '--edge-id', 'e'], env: { REMOTEINGRESS_TOKEN: 't' } },
      { name: 'no edge id', argv: ['edge', '--hub-host', 'h', '--secret', SECRET] },
      { name: 'an edge in the edges file', argv: ['hub', '--edges', badEdges, '--tunnel-port', '0'] },
      { name: 'the TOML syntax', argv: ['edge', '--config', badToml] },
      { name: 'a certificate without a key', argv: ['hub', '--tls-cert', badEdges] },
      { name: 'a port out of range', argv: ['hub', '--tunnel-port', '70000'] },
      { name: 'a bad variable value', argv: ['edge'], env: { REMOTEINGRESS_TRANSPORT_MODE: 'carrier-pigeon', REMOTEINGRESS_TOKEN: 't' } },
      { name: 'a short secret', argv: ['edge', '--hub-host', 'h', '--edge-id', 'e', '--secret', 'short'] },
      { name: 'an unknown flag', argv: ['hub', '--tunnel-prot', '1'] },
      { name: 'a missing file', argv: ['edge', '--token-file', path.join(dir, 'nowhere')] },
      { name: 'an unknown mode', argv: [], env: { REMOTEINGRESS_MODE: 'proxy' } },
      { name: 'nothing to do', argv: [] },
    ];
    for (const c of cases) {
      const rust = bin(c.argv, c.env);
      assert.equal(rust.code, EXIT_USAGE, `${c.name}: remoteingress-bin: ${rust.stderr}`);
      const node = await ts(c);
      assert.equal(node.code, EXIT_USAGE, `${c.name}: remoteingress: ${node.stderr}`);
      assert.ok(said(rust.stderr).length > 0, `${c.name}: ${rust.stderr}`);
      assert.deepEqual(said(node.stderr), said(rust.stderr), c.name);
      assert.equal(node.plan, undefined, `${c.name}: nothing planned`);
    }
  });

  test('a hub started through the TypeScript CLI listens as planned and re-reads its edges on SIGHUP', { timeout: 60_000 }, async () => {
    const [tunnelPort, egressPort] = [await freePort(), await freePort()];
    const config = file('run.toml', `[hub]\ntargetHost = "127.0.0.1"\n\n[[egress]]\nlistenAddr = "127.0.0.1:${egressPort}"\nedgeId = "a"\nlogicalHost = "mx.example.com"\nport = 25\n`);
    const edges = file('run-edges.json', JSON.stringify(EDGES));
    const plans: IHubPlan[] = [];
    const lines: string[] = [];
    const err: string[] = [];
    const controller = new AbortController();
    const running = runCli(
      ['hub', '--config', config, '--edges', edges, '--tunnel-port', String(tunnelPort), '--state-dir', path.join(dir, 'run'), '--json'],
      {
        env,
        stdout: { write: (chunk: string) => lines.push(...String(chunk).trim().split('\n')) } as unknown as NodeJS.WritableStream,
        stderr: output(err),
        signal: controller.signal,
        onPlan: (plan) => plans.push(plan as IHubPlan),
      },
    );
    let stopped: number | undefined;
    void running.then((code) => (stopped = code));
    try {
      const events = () => lines.map((line) => JSON.parse(line) as { event: string; data: Record<string, unknown> });
      const started = await eventually('started', () => {
        assert.equal(stopped, undefined, `the CLI stopped: ${err.join('')}`);
        return events().find((e) => e.event === 'started');
      }, 20_000);
      assert.equal(plans[0]?.config.tunnelPort, tunnelPort);
      assert.equal(started.data.tunnelPort, tunnelPort);
      assert.equal(started.data.allowedEdges, 1);
      // Something listens: it accepts (the egress listener then closes at once: no edge).
      for (const port of [tunnelPort, egressPort]) {
        const socket = net.connect(port, '127.0.0.1');
        const answer = await new Promise<string>((resolve) => {
          socket.once('connect', () => resolve('connected')).once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
        });
        socket.destroy();
        assert.ok(answer === 'connected' || answer === 'ECONNRESET', `port ${port}: ${answer}`);
      }
      writeFileSync(edges, JSON.stringify([...EDGES, { id: 'b', secret: SECRET }]));
      process.kill(process.pid, 'SIGHUP');
      const reloaded = await eventually('edgesReloaded', () => events().find((e) => e.event === 'edgesReloaded'));
      assert.equal(reloaded.data.edges, 2);
      assert.equal(plans.length, 2, 'SIGHUP ran plan again');
      assert.deepEqual(reloaded.data.edgesFile, edges);
    } finally {
      controller.abort();
      await running;
    }
    assert.equal(await running, 0, err.join(''));
  });
});
