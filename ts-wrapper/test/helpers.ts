// Test helpers: the binary under test, deadline-bounded waiting, processes, sockets.

import { execFile } from 'node:child_process';
import { once, type EventEmitter } from 'node:events';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

import { findBinary } from '../src/index.js';

/** The remoteingress-bin the tests use (same lookup as the wrapper); fails clearly if absent. */
export async function binaryPath(): Promise<string> {
  const found = await findBinary();
  if (found === null) {
    throw new Error('remoteingress-bin not found: run `cargo build` in the workspace or set REMOTEINGRESS_BINARY');
  }
  return found;
}

export interface IExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (bounded), never throwing on a non-zero exit. */
export function run(file: string, args: string[], timeoutMs = 20_000): Promise<IExecResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error !== null && typeof error.code !== 'number') {
        reject(error);
        return;
      }
      resolve({ code: error === null ? 0 : (error.code as number), stdout, stderr });
    });
  });
}

/** Polls `check` until it returns a value other than undefined/false, or fails at the deadline. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
      last = undefined;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) {
      const why = last instanceof Error ? `: last error: ${last.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

/** The next `event` of `emitter`, or a rejection after `timeoutMs`. */
export async function nextEvent<T = unknown>(emitter: EventEmitter, event: string, timeoutMs = 10_000): Promise<T> {
  const [value] = (await once(emitter, event, { signal: AbortSignal.timeout(timeoutMs) }).catch((error: Error) => {
    throw new Error(`no ${event} event within ${timeoutMs} ms (${error.message})`);
  })) as [T];
  return value;
}

/** True while a process with this PID exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

/** Asserts (by polling, bounded) that `pid` is gone: `process.kill(pid, 0)` throws ESRCH. */
export async function assertGone(pid: number, timeoutMs = 5_000): Promise<void> {
  await eventually(`process ${pid} to be gone`, () => !alive(pid), timeoutMs);
}

/** Kills `pid` if it still runs (test cleanup). */
export function killQuietly(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** A TCP target that records each connection's PROXY v1 line, then echoes the bytes after it. */
export class ProxyTarget {
  readonly headers: string[] = [];
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  private constructor(server: net.Server) {
    this.server = server;
  }

  static async listen(host: string, port: number): Promise<ProxyTarget> {
    const server = net.createServer();
    const target = new ProxyTarget(server);
    server.on('connection', (socket) => target.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return target;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = Buffer.alloc(0);
    let headerDone = false;
    socket.on('data', (chunk: Buffer) => {
      if (headerDone) {
        socket.write(chunk);
        return;
      }
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n');
      if (end === -1) {
        if (buffered.length > 107) socket.destroy();
        return;
      }
      headerDone = true;
      this.headers.push(buffered.subarray(0, end + 2).toString('latin1'));
      const rest = buffered.subarray(end + 2);
      if (rest.length > 0) socket.write(rest);
    });
    socket.on('end', () => socket.end());
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Whether `host:port` can be bound right now (it is free). */
export async function canBind(host: string, port: number): Promise<boolean> {
  const server = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return true;
  } catch {
    return false;
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/**
 * A ProxyTarget on 127.0.0.1:P where P is also free on `alsoFreeOn` (the edge's bind address),
 * since the edge's public port equals the target port.
 */
export async function targetOnSharedFreePort(alsoFreeOn: string): Promise<ProxyTarget> {
  for (let i = 0; i < 50; i += 1) {
    const target = await ProxyTarget.listen('127.0.0.1', 0);
    if (await canBind(alsoFreeOn, target.port)) return target;
    await target.close();
  }
  throw new Error(`no port free on both 127.0.0.1 and ${alsoFreeOn}`);
}

/**
 * Connects from 127.0.0.1 to `host:port`, sends `payload`, half-closes, and resolves with what
 * came back and the local port used.
 */
export function roundTrip(
  host: string,
  port: number,
  payload: string,
  timeoutMs = 5_000,
): Promise<{ reply: string; localPort: number }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, localAddress: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let localPort = 0;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`round trip to ${host}:${port} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('connect', () => {
      localPort = socket.localPort ?? 0;
      socket.end(payload);
    });
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ reply: Buffer.concat(chunks).toString('utf8'), localPort });
    });
  });
}
