// Crash recovery: kill -9 the binary and watch the supervisor restart it and replay the last
// configuration; a binary that keeps dying ends in crashRecoveryFailed; stop() never restarts.

import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  RemoteIngressHub,
  RemoteIngressError,
  type ICrashRecoveredEvent,
  type ICrashRecoveryFailedEvent,
  type IHubStatus,
  type TAllowedEdge,
} from '../src/index.js';
import { alive, assertGone, binaryPath, killQuietly, nextEvent } from './helpers.js';

const EDGES: TAllowedEdge[] = [
  { id: 'edge-a', secret: 'secret-a-0123456789', listenPorts: [8080] },
  { id: 'edge-b', secret: 'secret-b-0123456789', listenPorts: [8443] },
];

const FAST_RESTART = { initialDelayMs: 50, maxDelayMs: 400, jitter: 0 };

async function hubStatus(hub: RemoteIngressHub): Promise<IHubStatus> {
  const status = await hub.getStatus();
  assert.ok('role' in status, `hub status, got ${JSON.stringify(status)}`);
  return status;
}

describe('crash recovery', () => {
  let dir: string;
  let realBinary: string;
  const cleanup: Array<() => Promise<void> | void> = [];

  before(async () => {
    realBinary = await binaryPath();
    dir = mkdtempSync(path.join(tmpdir(), 'remoteingress-crash-'));
  });
  after(async () => {
    for (const step of cleanup.reverse()) await step();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A shell script standing in for the binary (`body` after the shebang); its path. */
  const fakeBinary = (name: string, body: string): string => {
    const script = path.join(dir, name);
    writeFileSync(script, `#!/bin/sh\n${body}`);
    chmodSync(script, 0o755);
    return script;
  };

  test('kill -9: crashRecovered, config and allowed edges replayed, calls meanwhile wait', { timeout: 60_000 }, async () => {
    const hub = new RemoteIngressHub({ binaryPath: realBinary, restart: FAST_RESTART });
    cleanup.push(() => hub.stop());
    const started = await hub.start({ tunnelPort: 0, streamEventMode: 'off' });
    await hub.updateAllowedEdges(EDGES);
    const firstPid = hub.pid as number;
    cleanup.push(() => killQuietly(firstPid));

    const recovered = nextEvent<ICrashRecoveredEvent>(hub, 'crashRecovered', 20_000);
    process.kill(firstPid, 'SIGKILL');
    // Made while the process is dead or restarting: they must wait for the recovery, not fail.
    const statusDuringRestart = hubStatus(hub);
    const event = await recovered;
    assert.equal(event.signal, 'SIGKILL');
    assert.equal(event.attempts, 1);
    assert.ok(event.pid !== undefined && event.pid !== firstPid && alive(event.pid));
    assert.equal(hub.running, true);
    assert.equal(hub.pid, event.pid);
    await assertGone(firstPid);

    const status = await statusDuringRestart;
    assert.equal(status.allowedEdges, EDGES.length, 'allowed edges re-applied');
    assert.equal(status.streamEventMode, 'off', 'start config re-applied');
    assert.equal(status.tunnelPort, started.tunnelPort, 'same tunnel port after the restart');
    assert.equal(status.certSha256, started.certSha256, 'same identity after the restart');
    assert.equal((await hubStatus(hub)).allowedEdges, EDGES.length);

    // A second crash, with an update racing it: the update lands on the new process, and the
    // replay after that crash uses the newest list.
    const secondPid = hub.pid as number;
    const recoveredAgain = nextEvent<ICrashRecoveredEvent>(hub, 'crashRecovered', 20_000);
    process.kill(secondPid, 'SIGKILL');
    const three = [...EDGES, { id: 'edge-c', secret: 'secret-c-0123456789' }];
    const update = await hub.updateAllowedEdges(three);
    assert.equal(update.edges, 3);
    await recoveredAgain;
    assert.equal((await hubStatus(hub)).allowedEdges, 3);

    const thirdPid = hub.pid as number;
    const recoveredThird = nextEvent<ICrashRecoveredEvent>(hub, 'crashRecovered', 20_000);
    process.kill(thirdPid, 'SIGKILL');
    await recoveredThird;
    assert.equal((await hubStatus(hub)).allowedEdges, 3, 'the newest list is the one replayed');

    const lastPid = hub.pid as number;
    await hub.stop();
    await assertGone(lastPid);
  });

  test('a binary that keeps dying ends in crashRecoveryFailed, without an endless loop', { timeout: 60_000 }, async () => {
    // First run: the real binary. Every restart after that dies: alternately right after
    // printing its ready line, and at once.
    const counter = path.join(dir, 'spawns');
    const script = fakeBinary(
      'dying-remoteingress-bin',
      `n=$(cat "$DYING_COUNTER" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$DYING_COUNTER"
if [ "$n" -eq 1 ]; then exec "$DYING_REAL_BINARY" "$@"; fi
echo "dying on purpose (run $n)" >&2
if [ $((n % 2)) -eq 0 ]; then echo '{"event":"ready","data":{"version":"0.0.0","protocol":1,"pid":'$$'}}'; fi
exit 3
`,
    );
    const saved = process.env['REMOTEINGRESS_BINARY'];
    process.env['REMOTEINGRESS_BINARY'] = script;
    cleanup.push(() => {
      if (saved === undefined) delete process.env['REMOTEINGRESS_BINARY'];
      else process.env['REMOTEINGRESS_BINARY'] = saved;
    });

    const maxAttempts = 3;
    const hub = new RemoteIngressHub({
      env: { DYING_COUNTER: counter, DYING_REAL_BINARY: realBinary },
      readyTimeoutMs: 3_000,
      restart: { ...FAST_RESTART, maxAttempts, windowMs: 60_000 },
    });
    cleanup.push(() => hub.stop());
    const logs: string[] = [];
    hub.on('log', (line) => logs.push(line));
    let recoveredEvents = 0;
    hub.on('crashRecovered', () => {
      recoveredEvents += 1;
    });

    await hub.start({ tunnelPort: 0 });
    await hub.updateAllowedEdges(EDGES);
    const pid = hub.pid as number;
    cleanup.push(() => killQuietly(pid));
    assert.equal(readFileSync(counter, 'utf8').trim(), '1');

    const failed = nextEvent<ICrashRecoveryFailedEvent>(hub, 'crashRecoveryFailed', 30_000);
    process.kill(pid, 'SIGKILL');
    const pending = hub.updateAllowedEdges(EDGES); // waits for the recovery, then fails with it
    const event = await failed;
    assert.equal(event.attempts, maxAttempts);
    assert.equal(event.signal, 'SIGKILL');
    assert.ok(event.error instanceof RemoteIngressError);
    assert.equal(event.error.code, 'crash_recovery_failed');
    assert.match(event.error.message, /gave up after 3 restart attempt/);
    await assert.rejects(pending, (error: RemoteIngressError) => {
      assert.equal(error.code, 'crash_recovery_failed');
      return true;
    });
    assert.equal(recoveredEvents, 0);
    assert.equal(hub.running, false);
    assert.equal(readFileSync(counter, 'utf8').trim(), String(1 + maxAttempts), 'exactly maxAttempts restarts');
    assert.ok(logs.some((line) => line.includes('dying on purpose')), 'stderr of the dying binary arrives as log events');
    await assert.rejects(hub.updateAllowedEdges(EDGES), (error: RemoteIngressError) => error.code === 'crash_recovery_failed');
    await hub.stop();
    assert.equal(readFileSync(counter, 'utf8').trim(), String(1 + maxAttempts), 'no restart after giving up');
  });

  test('stop() during a pending restart never restarts', { timeout: 30_000 }, async () => {
    const counter = path.join(dir, 'spawns-stop');
    const script = fakeBinary(
      'counting-remoteingress-bin',
      `n=$(cat "$COUNTER" 2>/dev/null || echo 0)
echo $((n + 1)) > "$COUNTER"
exec "$REAL_BINARY" "$@"
`,
    );
    const hub = new RemoteIngressHub({
      binaryPath: script,
      env: { COUNTER: counter, REAL_BINARY: realBinary },
      restart: { initialDelayMs: 500, jitter: 0 },
    });
    cleanup.push(() => hub.stop());
    await hub.start({ tunnelPort: 0 });
    const pid = hub.pid as number;
    cleanup.push(() => killQuietly(pid));
    const crashSeen = new Promise<void>((resolve) => {
      hub.on('log', (line) => {
        if (line.includes('exited unexpectedly')) resolve();
      });
    });
    process.kill(pid, 'SIGKILL');
    await Promise.race([crashSeen, nextEvent(hub, 'never', 10_000)]);
    await hub.stop();
    // The restart was due 500 ms after the crash; nothing may happen within well past that.
    await assert.rejects(nextEvent(hub, 'crashRecovered', 1_500), /no crashRecovered event/);
    assert.equal(readFileSync(counter, 'utf8').trim(), '1', 'no second process');
    assert.equal(hub.running, false);
    await assert.rejects(hub.updateAllowedEdges(EDGES), (error: RemoteIngressError) => error.code === 'not_started');
  });
});
