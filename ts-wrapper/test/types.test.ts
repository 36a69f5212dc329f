// The generated IPC types: no drift from the JSON Schema, and the reference names exist.

import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import type {
  IConnectedEdgeStatus,
  IEdgeConfig,
  IEdgeStatus,
  IEgressPolicy,
  IEgressTcpProxyInfo,
  IEgressTcpProxyRequest,
  IFirewallConfig,
  IFirewallRateLimit,
  IFirewallRule,
  IHubConfig,
  IHubStatus,
  IPerformanceConfig,
  TAddressFamilyPreference,
  TAllowedEdge,
  THubEvents,
  TEdgeEvents,
  TStreamEventMode,
  TTransportMode,
} from '../src/index.js';
import { run } from './helpers.js';

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

describe('generated IPC types', () => {
  test('`npm run check:types` finds no drift from ipc-schema/remoteingress-ipc.schema.json', { timeout: 60_000 }, async () => {
    const result = await run(process.execPath, [path.join(packageRoot, 'scripts/gen-types.mjs'), '--check'], 60_000);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.match(result.stdout, /matches the IPC schema/);
  });

});

/**
 * The reference API shapes against the generated types: a compile-time check (tsc builds the
 * tests before they run; a shape that no longer fits fails the build). Never called.
 */
export function referenceShapes(): unknown[] {
  const firewall: IFirewallConfig = {
    blockedIps: ['192.168.1.100', '10.0.0.0/8'],
    rateLimits: [{ id: 'http-rate', port: 80, protocol: 'tcp', rate: '100/second', perSourceIP: true } satisfies IFirewallRateLimit],
    rules: [{ id: 'ssh', direction: 'input', action: 'accept', sourceIP: '10.0.0.0/24', destPort: 22, protocol: 'tcp' } satisfies IFirewallRule],
  };
  const egress: IEgressPolicy = { enabled: true, allowedPorts: [25], allowedHostPatterns: ['*.example.net'], maxConcurrentStreams: 50 };
  const edge: TAllowedEdge = { id: 'edge-nyc-01', secret: 's-0123456789abcdef', listenPorts: [80, 443], listenPortsUdp: [53], stunIntervalSecs: 300, firewallConfig: firewall, egress };
  const mode: TStreamEventMode = 'summary';
  const performance: IPerformanceConfig = { heartbeatIntervalSecs: 15 };
  const hub: IHubConfig = { tunnelPort: 8443, targetHost: '127.0.0.1', streamEventMode: mode, performance, tls: { certPem: 'c', keyPem: 'k' } };
  const transport: TTransportMode = 'quicWithFallback';
  const edgeConfig: IEdgeConfig = { hubHost: 'hub.example.com', hubPort: 8443, edgeId: 'e', secret: 's-0123456789abcdef', transportMode: transport };
  const family: TAddressFamilyPreference = 'preferIpv4';
  const request: IEgressTcpProxyRequest = { edgeId: 'e', logicalHost: 'mx.example.net', port: 25, serverFirst: true, connectTimeoutMs: 10_000, addressFamily: family };
  type Shapes = [IHubStatus['connectedEdges'], IConnectedEdgeStatus['egressEnabled'], IEdgeStatus['publicIp'], IEgressTcpProxyInfo['listenPort']];
  const hubEvent: THubEvents['edgeConnected'][0]['edgeId'] = 'edge';
  const edgeEvent: TEdgeEvents['portsAssigned'][0]['listenPorts'] = [80];
  const shapes: Shapes | undefined = undefined;
  return [edge, hub, edgeConfig, request, hubEvent, edgeEvent, shapes];
}
