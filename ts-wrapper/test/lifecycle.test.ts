// Lifecycle through RustBridge: start, status, updateAllowedEdges, errors with codes, stop
// leaving no process behind; the edge class; the CLI.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  EXIT_USAGE,
  RemoteIngressEdge,
  RemoteIngressError,
  RemoteIngressHub,
  decodeConnectionToken,
  encodeConnectionToken,
  findBinary,
  runCli,
  type IEdgeConfig,
  type IHubStatus,
  type TAllowedEdge,
} from '../src/index.js';
import { workspaceBinaryPaths } from '../src/binary.js';
import type { IHubPlan, TPlan } from '../src/cli.js';
import { alive, assertGone, binaryPath, killQuietly } from './helpers.js';

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const EDGES: TAllowedEdge[] = [
  { id: 'edge-a', secret: 'secret-a-0123456789', listenPorts: [8080, 8443], listenPortsUdp: [5353] },
  {
    id: 'edge-b',
    secret: 'secret-b-0123456789',
    firewallConfig: { blockedIps: ['198.51.100.0/24'], rateLimits: [{ id: 'r', port: 80, rate: '10/second' }] },
    egress: { enabled: true, allowedPorts: [25] },
  },
];

function isHub(status: unknown): status is IHubStatus {
  return typeof status === 'object' && status !== null && (status as IHubStatus).role === 'hub';
}

describe('RemoteIngressHub lifecycle', () => {
  const hub = new RemoteIngressHub();
  const pids: number[] = [];
  before(async () => {
    await binaryPath(); // fail early and clearly without a binary
  });
  after(async () => {
    await hub.stop();
    pids.forEach(killQuietly);
  });

  test('getStatus before start is { running: false } and spawns nothing', { timeout: 5_000 }, async () => {
    assert.deepEqual(await hub.getStatus(), { running: false });
    assert.equal(hub.running, false);
    assert.equal(hub.pid, undefined);
  });

  test('hub-only calls before start fail with not_started', { timeout: 5_000 }, async () => {
    await assert.rejects(hub.updateAllowedEdges(EDGES), (error: RemoteIngressError) => {
      assert.equal(error.code, 'not_started');
      return true;
    });
  });

  test('start, getStatus, updateAllowedEdges, stop', { timeout: 30_000 }, async () => {
    const started = await hub.start({ tunnelPort: 0, targetHost: '127.0.0.1', streamEventMode: 'summary' });
    assert.equal(started.role, 'hub');
    assert.equal(started.running, true);
    assert.equal(started.streamEventMode, 'summary');
    assert.equal(hub.running, true);
    const pid = hub.pid;
    assert.ok(pid !== undefined && alive(pid), 'the binary runs');
    pids.push(pid);

    const result = await hub.updateAllowedEdges(EDGES);
    assert.deepEqual(result, { edges: 2, pushed: 0, disconnected: 0 });
    const status = await hub.getStatus();
    assert.ok(isHub(status));
    assert.equal(status.allowedEdges, 2);
    assert.equal(status.targetHost, '127.0.0.1');
    assert.deepEqual(status.connectedEdges, []);

    await hub.stop();
    assert.equal(hub.running, false);
    assert.equal(hub.pid, undefined);
    assert.throws(() => process.kill(pid, 0), (error: NodeJS.ErrnoException) => error.code === 'ESRCH');
    assert.deepEqual(await hub.getStatus(), { running: false });
    await hub.stop(); // idempotent
  });

  test("the binary's errors keep their IPC code", { timeout: 30_000 }, async () => {
    await hub.start({ tunnelPort: 0 });
    pids.push(hub.pid as number);
    await assert.rejects(hub.start({ tunnelPort: 0 }), (error: RemoteIngressError) => {
      assert.ok(error instanceof RemoteIngressError);
      assert.equal(error.code, 'already_started');
      assert.equal(error.method, 'start');
      return true;
    });
    await assert.rejects(hub.updateAllowedEdges([{ id: 'has space', secret: 's' }]), (error: RemoteIngressError) => {
      assert.equal(error.code, 'invalid_config');
      assert.match(error.message, /edges\[0\]\.id/);
      return true;
    });
    const typo = [{ id: 'e', secret: 's', listenPort: [1] }] as unknown as TAllowedEdge[];
    await assert.rejects(hub.updateAllowedEdges(typo), (error: RemoteIngressError) => {
      assert.equal(error.code, 'invalid_params');
      assert.match(error.message, /listenPort/);
      return true;
    });
    assert.equal(hub.running, true, 'refused requests leave the process running');
    const pid = hub.pid as number;
    await hub.stop();
    await assertGone(pid);
  });

  test('a start the binary refuses leaves no process behind', { timeout: 30_000 }, async () => {
    const bad = { tunnelPort: 0, targetHost: '', streamEventMode: 'loud' } as unknown as Parameters<RemoteIngressHub['start']>[0];
    await assert.rejects(hub.start(bad), (error: RemoteIngressError) => error.code === 'invalid_params');
    assert.equal(hub.running, false);
    assert.equal(hub.pid, undefined);
  });

  test('binary lookup: binaryPath (alone), else $REMOTEINGRESS_BINARY, then the workspace build', { timeout: 10_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'remoteingress-lookup-'));
    const saved = process.env['REMOTEINGRESS_BINARY'];
    try {
      const fromEnv = path.join(dir, 'from-env');
      const explicit = path.join(dir, 'explicit');
      for (const file of [fromEnv, explicit]) writeFileSync(file, '#!/bin/sh\nexit 0\n', { mode: 0o755 });
      process.env['REMOTEINGRESS_BINARY'] = fromEnv;
      assert.equal(await findBinary(explicit), explicit);
      assert.equal(await findBinary(), fromEnv);
      // A binaryPath that does not exist is an error, not a fallback to another binary.
      assert.equal(await findBinary(path.join(dir, 'missing')), null);
      const strict = new RemoteIngressHub({ binaryPath: path.join(dir, 'missing') });
      await assert.rejects(strict.start({}), (error: RemoteIngressError) => error.code === 'binary_not_found');
      delete process.env['REMOTEINGRESS_BINARY'];
      const workspace = workspaceBinaryPaths();
      assert.deepEqual(
        workspace.map((p) => path.relative(packageRoot, p)),
        ['../target/release/remoteingress-bin', '../target/debug/remoteingress-bin'].map((p) => path.normalize(p)),
      );
    } finally {
      if (saved === undefined) delete process.env['REMOTEINGRESS_BINARY'];
      else process.env['REMOTEINGRESS_BINARY'] = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a binary that dies before its ready line fails start() clearly', { timeout: 10_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'remoteingress-broken-'));
    try {
      const broken = path.join(dir, 'broken-bin');
      writeFileSync(broken, '#!/bin/sh\necho "cannot start: missing libfoo" >&2\nexit 3\n', { mode: 0o755 });
      const lost = new RemoteIngressHub({ binaryPath: broken, readyTimeoutMs: 2_000 });
      await assert.rejects(lost.start({}), (error: RemoteIngressError) => {
        assert.equal(error.code, 'spawn_failed');
        assert.match(error.message, /exited before it was ready \(exit code 3\)/);
        assert.match(error.message, /cannot start: missing libfoo/);
        return true;
      });
      assert.equal(lost.running, false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('RemoteIngressEdge lifecycle', () => {
  const edge = new RemoteIngressEdge();
  after(async () => {
    await edge.stop();
  });

  test('start (token or explicit), getStatus, stop', { timeout: 30_000 }, async () => {
    const token = encodeConnectionToken({ hubHost: '127.0.0.1', hubPort: 1, edgeId: 'edge-token', secret: 's3cret-0123456789' });
    const started = await edge.start({ token, transportMode: 'tcpTls', stunServers: [] });
    assert.equal(started.role, 'edge');
    assert.equal(started.edgeId, 'edge-token');
    assert.equal(started.hub, '127.0.0.1:1');
    const status = await edge.getStatus();
    assert.ok('role' in status && status.role === 'edge');
    assert.equal(status.connected, false, 'nothing listens on port 1');
    const pid = edge.pid as number;
    await edge.stop();
    assert.throws(() => process.kill(pid, 0), (error: NodeJS.ErrnoException) => error.code === 'ESRCH');

    const explicit = await edge.start({
      hubHost: '127.0.0.1',
      hubPort: 1,
      edgeId: 'edge-explicit',
      secret: 's3cret-0123456789',
      transportMode: 'tcpTls',
      stunServers: [],
    });
    assert.equal(explicit.edgeId, 'edge-explicit');
    await edge.stop();
  });
});

describe('remoteingress CLI', () => {
  const output = (chunks: string[]) =>
    ({ write: (chunk: string) => chunks.push(String(chunk)) }) as unknown as NodeJS.WritableStream;

  test('usage errors exit 64 with the binary\'s message; flags, variables and files reach the config', { timeout: 20_000 }, async () => {
    const err: string[] = [];
    const fails = async (args: string[], env: NodeJS.ProcessEnv, message: RegExp): Promise<void> => {
      err.length = 0;
      const code = await runCli(args, { env, stdout: output([]), stderr: output(err), handleSignals: false });
      assert.equal(code, EXIT_USAGE, `${args.join(' ')}: ${err.join('')}`);
      assert.match(err.join(''), message);
    };
    /** What the CLI would start for `args` (the binary's plan), starting nothing. */
    const planned = async <T extends TPlan = TPlan>(args: string[], env: NodeJS.ProcessEnv = {}): Promise<T> => {
      let plan: TPlan | undefined;
      const code = await runCli(args, { env, stdout: output([]), stderr: output(err), dryRun: true, onPlan: (p) => (plan = p) });
      assert.equal(code, 0, `${args.join(' ')}: ${err.join('')}`);
      assert.ok(plan !== undefined);
      return plan as T;
    };
    await fails([], {}, /REMOTEINGRESS_MODE/);
    await fails(['edge'], {}, /config\.hubHost: is required \(give either token/);
    await fails(['hub'], { REMOTEINGRESS_ALLOWED_EDGES_JSON: '{nope' }, /allowed edges JSON: /);
    await fails(['hub', '--shutdown-grace-secs', 'soon'], {}, /invalid value 'soon' for '--shutdown-grace-secs/);
    await fails(['edge', '--token', 'T', '--worker-threads', '0'], {}, /0 is not in 1\.\.=1024/);
    await fails(['edge', '--token', 'T'], {}, /config\.token: connection token is not base64url/);
    // Ranges and enum values: the binary's parser names the flag.
    await fails(['hub', '--tunnel-port', '70000'], {}, /--tunnel-port/);
    await fails(['hub', '--proxy-protocol', 'v3'], {}, /--proxy-protocol/);
    await fails(['edge', '--hub-host', 'h', '--edge-id', 'e', '--secret', 's-0123456789abcdef', '--transport-mode', 'carrier-pigeon'], {}, /--transport-mode/);
    const token = encodeConnectionToken({ hubHost: 'h', hubPort: 1, edgeId: 'e', secret: 's-0123456789abcdef' });
    assert.equal((await planned(['edge', '--token', token, '--shutdown-grace-secs', '5'])).config.shutdownGraceSecs, 5);
    const stun = await planned(['edge', '--token', token, '--stun-server', 'a:1', '--stun-server', 'b:2', '--worker-threads', '2']);
    assert.deepEqual((stun.config as IEdgeConfig).stunServers, ['a:1', 'b:2']);
    assert.equal(stun.workerThreads, 2);
    assert.deepEqual(((await planned(['edge', '--token', token, '--no-stun'])).config as IEdgeConfig).stunServers, []);
    // As for the binary, --no-stun and a STUN server from the environment conflict.
    await fails(['edge', '--token', token, '--no-stun'], { REMOTEINGRESS_STUN_SERVERS: 'x:1' }, /'--no-stun' cannot be used with '--stun-server/);
    // --config FILE.toml: the binary's file format; flags override it; tokens from files.
    const dir = mkdtempSync(path.join(tmpdir(), 'remoteingress-config-'));
    try {
      const hubFile = path.join(dir, 'hub.toml');
      writeFileSync(hubFile, '[hub]\ntunnelPort = 9443\ntargetHost = "10.0.0.5"\n\n[[edges]]\nid = "e1"\nsecret = "s1-0123456789abcdef"\nlistenPorts = [80]\n');
      const hub = await planned<IHubPlan>(['hub', '--config', hubFile, '--tunnel-port', '9444']);
      assert.equal(hub.config.tunnelPort, 9444);
      assert.equal(hub.config.targetHost, '10.0.0.5');
      assert.deepEqual(hub.edges.map((e) => [e.id, e.secret, e.listenPorts]), [['e1', 's1-0123456789abcdef', [80]]]);
      assert.deepEqual(hub.reload, { configFile: hubFile });
      // The tunnel port's bind address, as the binary's --tunnel-bind / REMOTEINGRESS_TUNNEL_BIND.
      assert.equal((await planned<IHubPlan>(['hub', '--config', hubFile, '--tunnel-bind', '192.0.2.7'])).config.tunnelBindAddress, '192.0.2.7');
      assert.equal((await planned<IHubPlan>(['hub', '--config', hubFile], { REMOTEINGRESS_TUNNEL_BIND: '::1' })).config.tunnelBindAddress, '::1');
      const tokenFile = path.join(dir, 'token');
      writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
      const edgeFile = path.join(dir, 'edge.toml');
      writeFileSync(edgeFile, '[edge]\nhubHost = "h"\nedgeId = "e"\nsecret = "s-0123456789abcdef"\ntransportMode = "tcpTls"\n');
      assert.deepEqual((await planned(['edge', '--config', edgeFile])).config, { hubHost: 'h', edgeId: 'e', secret: 's-0123456789abcdef', transportMode: 'tcpTls' });
      assert.deepEqual((await planned(['edge', '--config', edgeFile, '--token-file', tokenFile])).config, { token, transportMode: 'tcpTls' });
      writeFileSync(edgeFile, '[edge]\nhubHost = \n');
      await fails(['edge', '--config', edgeFile], {}, /edge\.toml:2: /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const version: string[] = [];
    assert.equal(await runCli(['--version'], { env: {}, stdout: output(version) }), 0);
    assert.match(version.join(''), /^remoteingress \d+\.\d+\.\d+; remoteingress-bin \d+\.\d+\.\d+/);
    const schema: string[] = [];
    assert.equal(await runCli(['schema'], { env: {}, stdout: output(schema) }), 0);
    assert.ok('$schema' in JSON.parse(schema.join('')) || 'definitions' in JSON.parse(schema.join('')), 'the JSON Schema');
    const out: string[] = [];
    assert.equal(await runCli(['token', 'decode', encodeConnectionToken({ hubHost: 'h', hubPort: 1, edgeId: 'e', secret: 's-0123456789abcdef' })], { stdout: output(out) }), 0);
    assert.deepEqual(JSON.parse(out.join('')), { hubHost: 'h', hubPort: 1, edgeId: 'e', secret: 's-0123456789abcdef', hubCertSha256: null });
  });

  test('secret new and token issue come from the binary, reading the hub\'s TOML file', { timeout: 30_000 }, async () => {
    const secretOut: string[] = [];
    assert.equal(await runCli(['secret', 'new'], { env: {}, stdout: output(secretOut), stderr: output([]) }), 0);
    const secret = secretOut.join('').trim();
    assert.match(secret, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
    const dir = mkdtempSync(path.join(tmpdir(), 'ri-cli-issue-'));
    try {
      const state = path.join(dir, 'state');
      const config = path.join(dir, 'hub.toml');
      writeFileSync(config, `[hub]\ntunnelPort = 9666\nstateDir = ${JSON.stringify(state)}\n\n[[edges]]\nid = "edge-cli"\nsecret = "${secret}"\n`, { mode: 0o640 });
      // The hub makes its identity in the state directory; token issue pins it.
      const hub = spawn(await binaryPath(), ['hub', '--config', config, '--tunnel-port', '0', '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
      const [line] = (await once(createInterface({ input: hub.stdout }), 'line')) as [string];
      const fingerprint = (JSON.parse(line) as { data: { certSha256: string } }).data.certSha256;
      hub.kill('SIGTERM');
      await once(hub, 'exit');
      const tokenOut: string[] = [];
      const code = await runCli(['token', 'issue', '--edge-id', 'edge-cli', '--hub-host', 'hub.example.com'], {
        env: { REMOTEINGRESS_CONFIG: config },
        stdout: output(tokenOut),
        stderr: output([]),
      });
      assert.equal(code, 0);
      assert.deepEqual(decodeConnectionToken(tokenOut.join('').trim()), {
        hubHost: 'hub.example.com', hubPort: 9666, edgeId: 'edge-cli', secret, hubCertSha256: fingerprint,
      });
      const err: string[] = [];
      assert.equal(await runCli(['token', 'issue', '--edge-id', 'nobody', '--hub-host', 'h', '--config', config], { env: {}, stdout: output([]), stderr: output(err) }), EXIT_USAGE);
      assert.match(err.join(''), /no edge "nobody"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('REMOTEINGRESS_MODE=edge with a token runs in-process and stops on abort', { timeout: 30_000 }, async () => {
    const out: string[] = [];
    const controller = new AbortController();
    const stdout = {
      write: (chunk: string) => {
        out.push(String(chunk));
        if (String(chunk).includes('"started"')) controller.abort();
        return true;
      },
    } as unknown as NodeJS.WritableStream;
    const token = encodeConnectionToken({ hubHost: '127.0.0.1', hubPort: 1, edgeId: 'edge-env', secret: 's3cret-0123456789' });
    const code = await runCli(['--json'], {
      env: { REMOTEINGRESS_MODE: 'edge', REMOTEINGRESS_TOKEN: token, REMOTEINGRESS_TRANSPORT_MODE: 'tcpTls' },
      stdout,
      stderr: { write: () => true } as unknown as NodeJS.WritableStream,
      signal: controller.signal,
      handleSignals: false,
    });
    assert.equal(code, 0);
    const started = out.map((line) => JSON.parse(line)).find((line) => line.event === 'started');
    assert.equal(started.data.edgeId, 'edge-env');
    await assertGone(started.data.pid);
  });

  test('`remoteingress hub` from the environment stops cleanly on SIGTERM', { timeout: 30_000 }, async () => {
    const child = spawn(process.execPath, [path.join(packageRoot, 'dist/src/bin.js'), '--json'], {
      env: {
        ...process.env,
        REMOTEINGRESS_MODE: 'hub',
        REMOTEINGRESS_TUNNEL_PORT: '0',
        REMOTEINGRESS_TARGET_HOST: '127.0.0.1',
        REMOTEINGRESS_STREAM_EVENT_MODE: 'summary',
        REMOTEINGRESS_ALLOWED_EDGES_JSON: JSON.stringify(EDGES),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let binaryPid: number | undefined;
    try {
      const exited = once(child, 'exit');
      const lines = createInterface({ input: child.stdout });
      for await (const line of lines) {
        const message = JSON.parse(line) as { event: string; data: { pid: number; role: string; allowedEdges: number } };
        if (message.event === 'started') {
          assert.equal(message.data.role, 'hub');
          assert.equal(message.data.allowedEdges, EDGES.length, 'started counts the edges it loaded');
          binaryPid = message.data.pid;
          break;
        }
      }
      assert.ok(binaryPid !== undefined && alive(binaryPid), 'the hub binary runs');
      child.kill('SIGTERM');
      const [code] = await exited;
      assert.equal(code, 0, 'exit status 0 after SIGTERM');
      await assertGone(binaryPid);
    } finally {
      child.kill('SIGKILL');
      killQuietly(binaryPid);
    }
  });
});
