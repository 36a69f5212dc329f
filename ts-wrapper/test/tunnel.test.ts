// [real tunnel] A hub and an edge driven from TypeScript on loopback, with real traffic through
// the tunnel: PROXY v1 header at the target, a port added at runtime, then kill -9 of the hub
// binary: the supervisor restarts it on the same tunnel port, the edge reconnects by itself, and
// traffic flows again.
//
// It runs once per transport. `tcpTls` is the scenario of the TypeScript-wrapper issue; it needs
// the TLS frame multiplexer in engine/src/transport/tls_mux and fails until that lands.
// `REMOTEINGRESS_TUNNEL_TRANSPORTS=quic` (comma-separated) selects transports.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';

import {
  RemoteIngressEdge,
  RemoteIngressHub,
  type EdgeConnectedEvent,
  type ICrashRecoveredEvent,
  type IHubStatus,
  type PortsEvent,
  type TTransportMode,
  type TunnelConnectedEvent,
} from '../src/index.js';
import { binaryPath, eventually, nextEvent, roundTrip, targetOnSharedFreePort, type ProxyTarget } from './helpers.js';

const EDGE_ADDRESS = '127.0.0.2';
const TRANSPORTS = (process.env['REMOTEINGRESS_TUNNEL_TRANSPORTS'] ?? 'tcpTls,quic')
  .split(',')
  .map((t) => t.trim())
  .filter((t) => t !== '') as TTransportMode[];

/** Resolves with the first `event` whose payload satisfies `match`. */
function eventMatching<T>(emitter: NodeJS.EventEmitter, event: string, match: (data: T) => boolean, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, listener);
      reject(new Error(`no matching ${event} event within ${timeoutMs} ms`));
    }, timeoutMs);
    const listener = (data: T): void => {
      if (!match(data)) return;
      clearTimeout(timer);
      emitter.off(event, listener);
      resolve(data);
    };
    emitter.on(event, listener);
  });
}

/** One connection through the edge: the echo comes back and the target saw the right header. */
async function assertTunneled(target: ProxyTarget, payload: string): Promise<void> {
  const before = target.headers.length;
  const { reply, localPort } = await roundTrip(EDGE_ADDRESS, target.port, payload);
  assert.equal(reply, payload, `echo through ${EDGE_ADDRESS}:${target.port}`);
  assert.equal(target.headers.length, before + 1, 'one PROXY header per connection');
  assert.equal(target.headers[before], `PROXY TCP4 127.0.0.1 ${EDGE_ADDRESS} ${localPort} ${target.port}\r\n`);
}

for (const transport of TRANSPORTS) {
  describe(`[real tunnel] hub and edge from TypeScript over ${transport}`, () => {
    const hub = new RemoteIngressHub({ restart: { initialDelayMs: 100, jitter: 0 } });
    const edge = new RemoteIngressEdge();
    const targets: ProxyTarget[] = [];
    const logs: string[] = [];
    hub.on('log', (line) => logs.push(`hub: ${line}`));
    edge.on('log', (line) => logs.push(`edge: ${line}`));

    after(async () => {
      await edge.stop();
      await hub.stop();
      await Promise.all(targets.map((target) => target.close()));
    });

    test('connect, PROXY v1 header, runtime port, kill -9 of the hub and reconnect', { timeout: 120_000 }, async () => {
      try {
        await scenario();
      } catch (error) {
        console.error(`--- last binary log lines (${transport}) ---\n${logs.slice(-60).join('\n')}`);
        throw error;
      }
    });

    async function scenario(): Promise<void> {
      await binaryPath();
      const first = await targetOnSharedFreePort(EDGE_ADDRESS);
      targets.push(first);
      const edgeId = `edge-ts-${transport}`;
      const secret = 'tunnel-secret-1-0123456789';

      // Short heartbeats: QUIC learns of a vanished (kill -9) hub through its idle timeout.
      const started = await hub.start({
        tunnelPort: 0,
        targetHost: '127.0.0.1',
        performance: { heartbeatIntervalSecs: 1, heartbeatTimeoutSecs: 3 },
      });
      const tunnelPort = started.tunnelPort;
      assert.ok(tunnelPort > 0, `the hub binds its tunnel port (got ${tunnelPort})`);
      await hub.updateAllowedEdges([{ id: edgeId, secret, listenPorts: [first.port] }]);

      const edgeConnected = nextEvent<EdgeConnectedEvent>(hub, 'edgeConnected', 30_000);
      const tunnelConnected = nextEvent<TunnelConnectedEvent>(edge, 'tunnelConnected', 30_000);
      const assigned = eventMatching<PortsEvent>(edge, 'portsAssigned', (e) => e.listenPorts.includes(first.port), 30_000);
      await edge.start({
        hubHost: '127.0.0.1',
        hubPort: tunnelPort,
        edgeId,
        secret,
        bindAddress: EDGE_ADDRESS,
        transportMode: transport,
        stunServers: [],
      });
      const [connected, tunnel] = await Promise.all([edgeConnected, tunnelConnected, assigned]);
      assert.equal(connected.edgeId, edgeId);
      assert.equal(tunnel.transport, transport === 'quic' ? 'quic' : 'tcpTls');
      await eventually('the edge to listen on the first port', async () => {
        const status = await edge.getStatus();
        return 'role' in status && status.listenPorts.includes(first.port);
      });

      await assertTunneled(first, 'hello through the tunnel\n');

      // A second port, added at runtime, serves too.
      const second = await targetOnSharedFreePort(EDGE_ADDRESS);
      targets.push(second);
      const updated = eventMatching<PortsEvent>(edge, 'portsUpdated', (e) => e.listenPorts.includes(second.port), 30_000);
      const pushed = await hub.updateAllowedEdges([{ id: edgeId, secret, listenPorts: [first.port, second.port] }]);
      assert.equal(pushed.pushed, 1, 'the connected edge got the new config');
      await updated;
      await assertTunneled(second, 'second port\n');
      await assertTunneled(first, 'first port still\n');

      // kill -9 the hub binary: crashRecovered, same tunnel port, the edge comes back by itself.
      const hubPid = hub.pid as number;
      const recovered = nextEvent<ICrashRecoveredEvent>(hub, 'crashRecovered', 30_000);
      const reconnectedEdge = nextEvent<TunnelConnectedEvent>(edge, 'tunnelConnected', 90_000);
      const reconnectedHub = eventMatching<EdgeConnectedEvent>(hub, 'edgeConnected', (e) => e.edgeId === edgeId, 90_000);
      process.kill(hubPid, 'SIGKILL');
      const [recovery] = await Promise.all([recovered, reconnectedEdge, reconnectedHub]);
      assert.notEqual(recovery.pid, hubPid);
      const afterCrash = (await hub.getStatus()) as IHubStatus;
      assert.equal(afterCrash.tunnelPort, tunnelPort, 'the restarted hub listens on the same tunnel port');
      assert.equal(afterCrash.allowedEdges, 1, 'allowed edges replayed');
      await eventually('traffic through the reconnected tunnel', async () => {
        await assertTunneled(first, 'after the crash\n');
        return true;
      }, 30_000, 200);
      await assertTunneled(second, 'second port after the crash\n');
    }
  });
}

// stop() gives open streams the role's shutdownGraceSecs before it gives up on the process:
// with a 1 s stopTimeoutMs and a 3 s grace, a wrapper that did not wait would SIGKILL the edge
// after 2 s and the open connection would see an ordinary end of file instead of the reset the
// edge sends when the grace period is over.
describe('[real tunnel] stop() waits for the grace period', () => {
  const hub = new RemoteIngressHub();
  const edge = new RemoteIngressEdge({ stopTimeoutMs: 1_000 });
  const targets: ProxyTarget[] = [];

  after(async () => {
    await edge.stop();
    await hub.stop();
    await Promise.all(targets.map((target) => target.close()));
  });

  test('an open connection is reset at the end of the grace period, not cut by SIGKILL', { timeout: 60_000 }, async () => {
    await binaryPath();
    const target = await targetOnSharedFreePort(EDGE_ADDRESS);
    targets.push(target);
    const { tunnelPort } = await hub.start({ tunnelPort: 0, targetHost: '127.0.0.1' });
    await hub.updateAllowedEdges([{ id: 'edge-grace', secret: 'grace-secret-1-0123456789', listenPorts: [target.port] }]);
    const assigned = eventMatching<PortsEvent>(edge, 'portsAssigned', (e) => e.listenPorts.includes(target.port), 30_000);
    await edge.start({
      hubHost: '127.0.0.1',
      hubPort: tunnelPort,
      edgeId: 'edge-grace',
      secret: 'grace-secret-1-0123456789',
      bindAddress: EDGE_ADDRESS,
      transportMode: 'tcpTls',
      stunServers: [],
      shutdownGraceSecs: 3,
    });
    await assigned;
    await eventually('the edge to listen', async () => {
      const status = await edge.getStatus();
      return 'role' in status && status.listenPorts.includes(target.port);
    });

    const client = net.connect({ host: EDGE_ADDRESS, port: target.port, localAddress: '127.0.0.1' });
    const ended = new Promise<string>((resolve) => {
      client.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
      client.on('end', () => resolve('end of file'));
    });
    await new Promise<void>((resolve) => client.once('connect', () => resolve()));
    client.write('held open\n');
    await new Promise<void>((resolve) => client.once('data', () => resolve()));

    const started = Date.now();
    await edge.stop();
    const took = Date.now() - started;
    assert.equal(await ended, 'ECONNRESET', 'the open connection is reset, not ended');
    assert.ok(took >= 2_500, `stop() waited for the grace period (took ${took} ms)`);
  });
});
