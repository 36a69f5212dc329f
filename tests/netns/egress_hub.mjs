// The hub side of one egress round trip, driven from TypeScript (the built ts-wrapper): run by
// tests/netns/egress.py inside the hub's network namespace, with the edge started by the test.
//   node egress_hub.mjs <binary> <tunnelPort> <stateDir> <edgeId> <secret> <host> <port>
// Prints "ready" once the edge may connect, then one JSON line with what happened.
import net from 'node:net';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const { RemoteIngressHub } = await import(path.join(here, '..', '..', 'ts-wrapper', 'dist', 'src', 'index.js'));
const [binaryPath, tunnelPort, stateDir, edgeId, secret, host, port] = process.argv.slice(2);

// Connects, reads the banner, sends one line, reads the reply: the two lines.
async function roundTrip(host, port) {
  const socket = net.connect({ host, port });
  const lines = [];
  let buffered = '';
  socket.setEncoding('utf8');
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    buffered += chunk;
    while (buffered.includes('\n')) {
      const at = buffered.indexOf('\n');
      lines.push(buffered.slice(0, at).trim());
      buffered = buffered.slice(at + 1);
      if (lines.length === 1) socket.write('EHLO from typescript\r\n');
      if (lines.length === 2) socket.end();
    }
  });
  await once(socket, 'close');
  return lines;
}

const hub = new RemoteIngressHub({ binaryPath });
const outcome = {};
try {
  await hub.start({ tunnelPort: Number(tunnelPort), stateDir });
  const egress = { enabled: true, allowedPorts: [Number(port)], allowPrivateRanges: true };
  await hub.updateAllowedEdges([{ id: edgeId, secret, egress }]);
  const connected = once(hub, 'edgeConnected');
  console.log('ready');
  await connected;
  const event = once(hub, 'egressConnection');
  const proxy = await hub.startEgressTcpProxy({ edgeId, logicalHost: host, port: Number(port), serverFirst: true });
  const lines = await roundTrip(proxy.listenHost, proxy.listenPort);
  const [egressEvent] = await event;
  Object.assign(outcome, { banner: lines[0], reply: lines[1], event: egressEvent });
  // A persistent listener: two connections one after the other, then it is closed.
  const listener = await hub.startEgressTcpListener({
    listenAddr: '127.0.0.1:0', edgeId, logicalHost: host, port: Number(port), serverFirst: true,
  });
  outcome.listener = [await roundTrip('127.0.0.1', listener.listenPort), await roundTrip('127.0.0.1', listener.listenPort)];
  await hub.stopEgressTcpListener(listener.listenerId);
} catch (error) {
  outcome.error = String(error);
} finally {
  await hub.stop();
}
console.log(JSON.stringify(outcome));
