// Supervision of one `remoteingress-bin --management` process, spoken to through smartrust's
// RustBridge (one RustBridge per process lifetime).
//
// States:  idle --start--> spawning --ready--> running --unexpected exit--> recovering
//          recovering --respawned + replayed--> running (crashRecovered)
//          recovering --attempts exhausted--> failed (crashRecoveryFailed)
//          any --stop()--> stopping --> idle
//
// As in esbuild's service (lib/shared/common.ts, lib/npm/node.ts): when the child dies every
// pending request is rejected with a reason, and nothing is restarted after an explicit stop().
// Beyond that, an unexpected exit is repaired: the binary is respawned with backoff, the owner's
// last confirmed configuration is replayed, and calls made meanwhile wait (bounded) instead of
// failing. A request that was in flight when the process died is retried once on the new process
// when it is safe to repeat (the new process starts from the replayed state, so it is).

import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { RustBridge } from '@push.rocks/smartrust';

import { RestartBackoff, type IRestartPolicy } from './backoff.js';
import { BINARY_NAME, describeBinarySearch, findBinary, locatorOptions } from './binary.js';
import { RemoteIngressError } from './errors.js';
import type { ErrorCode, ReadyEvent } from './generated/ipc.js';
import type { ICrashRecoveredEvent, ICrashRecoveryFailedEvent, TRemoteIngressCommands } from './types.js';

/** IPC protocol version this wrapper speaks (the `protocol` of the binary's `ready` line). */
export const IPC_PROTOCOL_VERSION = 1;

/** Options shared by RemoteIngressHub and RemoteIngressEdge. */
export interface IRemoteIngressOptions {
  /** Path of `remoteingress-bin`; default: $REMOTEINGRESS_BINARY, ../target/{release,debug}, PATH. */
  binaryPath?: string;
  /** Extra environment for the binary (e.g. `{ REMOTEINGRESS_LOG: 'debug' }`). */
  env?: Record<string, string>;
  /** Timeout of one request, in ms. Default 30000. */
  requestTimeoutMs?: number;
  /** How long a new process may take to print its `ready` line, in ms. Default 10000. */
  readyTimeoutMs?: number;
  /** Crash-restart policy (backoff and attempt cap). */
  restart?: IRestartPolicy;
  /** How long a call waits for an ongoing crash recovery, in ms. Default 30000. */
  restartWaitTimeoutMs?: number;
  /** How long `stop()` waits for a graceful exit before SIGKILL, in ms. Default 5000. */
  stopTimeoutMs?: number;
}

type TMethod = keyof TRemoteIngressCommands;
type TState = 'idle' | 'spawning' | 'running' | 'recovering' | 'failed' | 'stopping';

export interface IReplayStep<M extends TMethod = TMethod> {
  method: M;
  params: TRemoteIngressCommands[M]['params'];
}

/** What the owning class provides. */
export interface ISupervisorHooks {
  /** Event names (without the `management:` prefix) to forward. */
  readonly eventNames: readonly string[];
  onEvent(name: string, data: unknown): void;
  onLog(line: string): void;
  /** The requests that restore the last confirmed configuration on a fresh process. */
  replaySteps(): IReplayStep[];
  onCrashRecovered(event: ICrashRecoveredEvent): void;
  onCrashRecoveryFailed(event: ICrashRecoveryFailedEvent): void;
}

interface IProcessInfo {
  pid: number | undefined;
  stderrTail: string[];
}

const STDERR_TAIL_LINES = 20;
const TRANSPORT_FAILURE =
  /process exited|process killed|bridge is not running|Failed to write to transport|stdin not available/;

type TBridge = RustBridge<TRemoteIngressCommands>;

/** Minimal view of RustBridge internals used by `captureErrorCodes`. */
interface IBridgeInternals {
  handleLine?: (line: string) => void;
  pendingRequests?: Map<string, { reject: (error: Error) => void }>;
}

/**
 * RustBridge rejects a failed response with `new Error(response.error)`, dropping the response's
 * `code`. This hook (smartrust 1.3.x internals, hence the pinned version) wraps the pending
 * request's reject so the error keeps it; if the internals ever differ it does nothing, and errors
 * simply have no code. `test/lifecycle.test.ts` checks the codes arrive.
 */
function captureErrorCodes(bridge: TBridge): void {
  const internals = bridge as unknown as IBridgeInternals;
  const original = internals.handleLine;
  const pending = internals.pendingRequests;
  if (typeof original !== 'function' || !(pending instanceof Map)) return;
  internals.handleLine = (line: string): void => {
    if (line.includes('"success":false')) {
      try {
        const parsed = JSON.parse(line) as { id?: unknown; success?: unknown; code?: unknown };
        const request = typeof parsed.id === 'string' ? pending.get(parsed.id) : undefined;
        if (request !== undefined && parsed.success === false && typeof parsed.code === 'string') {
          const code = parsed.code as ErrorCode;
          const reject = request.reject;
          request.reject = (error: Error) => reject(new RemoteIngressError(error.message, { code }));
        }
      } catch {
        // Not JSON: RustBridge reports it.
      }
    }
    original.call(bridge, line);
  };
}

/**
 * smartrust 1.3.x's StdioTransport writes to the child's stdin without an 'error' listener, so a
 * request racing the child's death (EPIPE) would surface as an uncaught exception and take the
 * host process down. The write's own callback already rejects the request; this listener only
 * keeps the stream error from being fatal. Does nothing if the internals differ.
 */
function guardStdin(bridge: TBridge): void {
  const transport = (bridge as unknown as { transport?: { childProcess?: { stdin?: NodeJS.WritableStream | null } } })
    .transport;
  transport?.childProcess?.stdin?.on('error', () => {
    // Reported through the failed request (binary_exited) and the exit event.
  });
}

export class Supervisor {
  private state: TState = 'idle';
  private bridge: TBridge | undefined;
  private readonly processes = new WeakMap<TBridge, IProcessInfo>();
  /** Every bridge whose process may still run (spawning, current, candidate). */
  private readonly live = new Set<TBridge>();
  /** A bridge being spawned or replayed during recovery, not yet `bridge`. */
  private candidate: TBridge | undefined;
  private readonly backoff: RestartBackoff;
  private readonly changes = new EventEmitter();
  private recoveryAbort: AbortController | undefined;
  private failure: RemoteIngressError | undefined;
  private spawning: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private readonly requestTimeoutMs: number;
  private readonly readyTimeoutMs: number;
  private readonly restartWaitTimeoutMs: number;
  private readonly stopTimeoutMs: number;

  constructor(
    private readonly options: IRemoteIngressOptions,
    private readonly hooks: ISupervisorHooks,
  ) {
    this.backoff = new RestartBackoff(options.restart);
    this.requestTimeoutMs = positive(options.requestTimeoutMs, 30_000, 'requestTimeoutMs');
    this.readyTimeoutMs = positive(options.readyTimeoutMs, 10_000, 'readyTimeoutMs');
    this.restartWaitTimeoutMs = positive(options.restartWaitTimeoutMs, 30_000, 'restartWaitTimeoutMs');
    this.stopTimeoutMs = positive(options.stopTimeoutMs, 5_000, 'stopTimeoutMs');
    this.changes.setMaxListeners(0);
  }

  /** True while a process is up and answering (not during a restart). */
  get running(): boolean {
    return this.state === 'running' && this.bridge?.running === true;
  }

  /** PID of the current process, if any. */
  get pid(): number | undefined {
    return this.bridge === undefined ? undefined : this.processes.get(this.bridge)?.pid;
  }

  /** True once a process was started and not stopped (including during recovery). */
  get active(): boolean {
    return this.state === 'spawning' || this.state === 'running' || this.state === 'recovering';
  }

  private setState(state: TState): void {
    this.state = state;
    this.changes.emit('change');
  }

  /**
   * Makes sure a process runs, spawning one if none does. Returns true when this call spawned
   * it (so the caller may shut it down again if its first request fails).
   */
  async ensureProcess(): Promise<boolean> {
    if (this.stopping !== undefined) await this.stopping;
    if (this.state === 'idle' || this.state === 'failed') {
      this.failure = undefined;
      this.backoff.reset();
      this.setState('spawning');
      this.spawning = (async () => {
        try {
          const bridge = await this.spawn();
          if (this.state !== 'spawning') {
            this.dispose(bridge);
            throw new RemoteIngressError('stopped while the binary was starting', { code: 'stopped' });
          }
          this.bridge = bridge;
          this.setState('running');
        } catch (error) {
          if (this.state === 'spawning') this.setState('idle');
          throw error;
        } finally {
          this.spawning = undefined;
        }
      })();
      await this.spawning;
      return true;
    }
    if (this.spawning !== undefined) await this.spawning;
    return false;
  }

  /**
   * Sends one request. During a crash recovery it waits (up to `restartWaitTimeoutMs`); if the
   * process dies while the request is in flight and `retryOnCrash` is set, the request is sent
   * again once the process is back.
   */
  async call<M extends TMethod>(
    method: M,
    params: TRemoteIngressCommands[M]['params'],
    options: { retryOnCrash: boolean },
  ): Promise<TRemoteIngressCommands[M]['result']> {
    const deadline = Date.now() + this.restartWaitTimeoutMs;
    let dead: TBridge | undefined;
    for (;;) {
      const bridge = await this.currentBridge(method, deadline, dead);
      try {
        return await this.send(bridge, method, params);
      } catch (error) {
        const crashed = error instanceof RemoteIngressError && error.code === 'binary_exited';
        // Retry once, on the next process (never on the one that just failed).
        if (crashed && options.retryOnCrash && dead === undefined && this.active) {
          dead = bridge;
          continue;
        }
        throw error;
      }
    }
  }

  /**
   * Stops the process for good (no restart): `stop` request (given `graceMs` on top of
   * `stopTimeoutMs`, the time open streams may take to finish), EOF/SIGTERM, then SIGKILL.
   */
  async shutdown(graceMs = 0): Promise<void> {
    if (this.stopping !== undefined) return this.stopping;
    this.stopping = this.doShutdown(graceMs).finally(() => {
      this.stopping = undefined;
    });
    return this.stopping;
  }

  private async doShutdown(graceMs: number): Promise<void> {
    const bridges = [...this.live];
    this.bridge = undefined;
    this.candidate = undefined;
    this.setState('stopping');
    this.recoveryAbort?.abort();
    await Promise.all(bridges.map((bridge) => this.stopProcess(bridge, graceMs)));
    this.failure = undefined;
    this.backoff.reset();
    this.setState('idle');
  }

  // --- internals ---

  private async currentBridge(method: string, deadline: number, dead?: TBridge): Promise<TBridge> {
    for (;;) {
      if (this.state === 'running' && this.bridge?.running === true && this.bridge !== dead) return this.bridge;
      if (this.state === 'stopping') {
        throw new RemoteIngressError(`cannot call ${method}: stop() was called`, { code: 'stopped', method });
      }
      if (this.state === 'idle') {
        throw new RemoteIngressError(`cannot call ${method}: not started (call start() first)`, {
          code: 'not_started',
          method,
        });
      }
      if (this.state === 'failed') {
        throw (
          this.failure ??
          new RemoteIngressError('remoteingress-bin crashed and could not be restarted', {
            code: 'crash_recovery_failed',
            method,
          })
        );
      }
      // spawning, recovering, or running with a process that just died (its exit not yet seen).
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new RemoteIngressError(
          `cannot call ${method}: remoteingress-bin is restarting after a crash and did not come back within ${this.restartWaitTimeoutMs} ms`,
          { code: 'recovery_timeout', method },
        );
      }
      await this.nextChange(Math.min(remaining, 200));
    }
  }

  private nextChange(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.changes.off('change', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.changes.on('change', done);
    });
  }

  private async send<M extends TMethod>(
    bridge: TBridge,
    method: M,
    params: TRemoteIngressCommands[M]['params'],
  ): Promise<TRemoteIngressCommands[M]['result']> {
    try {
      return await bridge.sendCommand(method, params);
    } catch (error) {
      if (error instanceof RemoteIngressError) {
        throw new RemoteIngressError(`${method}: ${error.message}`, { code: error.code, method });
      }
      const message = error instanceof Error ? error.message : String(error);
      if (TRANSPORT_FAILURE.test(message) || !bridge.running) {
        throw new RemoteIngressError(`${BINARY_NAME} exited while handling ${method}`, {
          code: 'binary_exited',
          method,
          cause: error,
        });
      }
      if (/timed out/.test(message)) {
        throw new RemoteIngressError(`${method}: ${message}`, { code: 'timeout', method, cause: error });
      }
      throw new RemoteIngressError(`${method}: ${message}`, { method, cause: error });
    }
  }

  /** Spawns one process and waits for its `ready` line; throws a clear error otherwise. */
  private async spawn(): Promise<TBridge> {
    const binaryPath = await findBinary(this.options.binaryPath);
    if (binaryPath === null) {
      throw new RemoteIngressError(
        `${BINARY_NAME} not found; looked at ${describeBinarySearch(this.options.binaryPath)}. ` +
          `Build it with \`cargo build\` or set ${'REMOTEINGRESS_BINARY'}.`,
        { code: 'binary_not_found' },
      );
    }
    const bridge: TBridge = new RustBridge<TRemoteIngressCommands>({
      ...locatorOptions(binaryPath),
      cliArgs: ['--management'],
      requestTimeoutMs: this.requestTimeoutMs,
      readyTimeoutMs: this.readyTimeoutMs,
      ...(this.options.env === undefined ? {} : { env: this.options.env }),
    });
    captureErrorCodes(bridge);
    this.live.add(bridge);
    const info: IProcessInfo = { pid: undefined, stderrTail: [] };
    this.processes.set(bridge, info);
    let ready: ReadyEvent | undefined;
    bridge.on('management:ready', (data: ReadyEvent) => {
      ready = data;
      info.pid = data.pid;
    });
    bridge.on('stderr', (line: string) => {
      info.stderrTail.push(line);
      if (info.stderrTail.length > STDERR_TAIL_LINES) info.stderrTail.shift();
      this.hooks.onLog(line);
    });
    for (const name of [...this.hooks.eventNames, 'ipcError']) {
      bridge.on(`management:${name}`, (data: unknown) => {
        // Only the current process (or the one being recovered) speaks for the owner.
        if (bridge === this.bridge || bridge === this.candidate) this.hooks.onEvent(name, data);
      });
    }
    let exited: { code: number | null; signal: string | null } | undefined;
    const exitedBeforeReady = new Promise<false>((resolve) => {
      bridge.once('exit', (code: number | null, signal: string | null) => {
        exited = { code, signal };
        resolve(false);
      });
    });
    bridge.on('exit', (code: number | null, signal: string | null) => this.onExit(bridge, code, signal));

    const started = Date.now();
    const ok = await Promise.race([bridge.spawn(), exitedBeforeReady]);
    guardStdin(bridge);
    if (!ok || ready === undefined) {
      this.dispose(bridge);
      const tail = info.stderrTail.length > 0 ? `; its stderr ended with:\n  ${info.stderrTail.join('\n  ')}` : '';
      const why =
        exited !== undefined
          ? `exited before it was ready (${describeExit(exited.code, exited.signal)})`
          : Date.now() - started >= this.readyTimeoutMs
            ? `did not print its ready line within ${this.readyTimeoutMs} ms`
            : 'could not be started';
      throw new RemoteIngressError(`${binaryPath} ${why}${tail}`, { code: 'spawn_failed' });
    }
    if (ready.protocol !== IPC_PROTOCOL_VERSION) {
      this.dispose(bridge);
      throw new RemoteIngressError(
        `${binaryPath} (version ${ready.version}) speaks IPC protocol ${ready.protocol}; this wrapper speaks ${IPC_PROTOCOL_VERSION}`,
        { code: 'spawn_failed' },
      );
    }
    return bridge;
  }

  private onExit(bridge: TBridge, code: number | null, signal: string | null): void {
    this.live.delete(bridge);
    if (bridge !== this.bridge) return; // a candidate, or a process already replaced or stopped
    this.bridge = undefined;
    if (this.state !== 'running') return;
    this.hooks.onLog(`${BINARY_NAME} exited unexpectedly (${describeExit(code, signal)}); restarting`);
    this.setState('recovering');
    void this.recover(code, signal);
  }

  private async recover(exitCode: number | null, signal: string | null): Promise<void> {
    const abort = new AbortController();
    this.recoveryAbort = abort;
    const crashedAt = Date.now();
    let attempts = 0;
    let lastError: Error = new Error('no restart attempt was allowed');
    for (;;) {
      const delay = this.backoff.next(Date.now());
      if (delay === undefined) break;
      attempts += 1;
      try {
        await sleep(delay, undefined, { signal: abort.signal });
      } catch {
        return; // stop() during the backoff
      }
      if (abort.signal.aborted) return;
      let bridge: TBridge | undefined;
      try {
        bridge = await this.spawn();
        if (abort.signal.aborted) {
          this.dispose(bridge);
          return;
        }
        this.candidate = bridge;
        for (const step of this.hooks.replaySteps()) {
          await this.send(bridge, step.method, step.params);
          if (abort.signal.aborted) return; // shutdown() stops the candidate
        }
        if (!bridge.running) throw new Error(`${BINARY_NAME} exited right after the replay`);
        this.candidate = undefined;
        this.bridge = bridge;
        this.setState('running');
        this.hooks.onCrashRecovered({
          attempts,
          exitCode,
          signal,
          downtimeMs: Date.now() - crashedAt,
          pid: this.processes.get(bridge)?.pid,
        });
        return;
      } catch (error) {
        lastError = error instanceof Error ? error : new Error(String(error));
        if (bridge !== undefined && this.candidate === bridge) this.candidate = undefined;
        if (bridge !== undefined) this.dispose(bridge);
        if (abort.signal.aborted) return;
        this.hooks.onLog(`restart attempt ${attempts} failed: ${lastError.message}`);
      }
    }
    const policy = this.backoff.options;
    this.failure = new RemoteIngressError(
      `${BINARY_NAME} crashed (${describeExit(exitCode, signal)}) and the supervisor gave up after ${attempts} restart attempt(s) ` +
        `(at most ${policy.maxAttempts} within ${policy.windowMs} ms); last error: ${lastError.message}`,
      { code: 'crash_recovery_failed', cause: lastError },
    );
    this.setState('failed');
    this.hooks.onCrashRecoveryFailed({ attempts, exitCode, signal, error: this.failure });
  }

  /** Kills a process without waiting (RustBridge: SIGTERM, SIGKILL after 5 s). */
  private dispose(bridge: TBridge): void {
    this.live.delete(bridge);
    bridge.removeAllListeners();
    bridge.kill();
  }

  /**
   * Graceful stop of one process: `stop` and EOF on its stdin, then its exit event within the
   * grace; SIGKILL otherwise.
   * Signals go through the child's own handle, which Node never points at a reused PID.
   */
  private async stopProcess(bridge: TBridge, graceMs = 0): Promise<void> {
    const child = childProcessOf(bridge);
    const exited =
      child === undefined || child.exitCode !== null || child.signalCode !== null
        ? Promise.resolve()
        : new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (bridge.running) {
      try {
        await withTimeout(bridge.sendCommand('stop', {}), this.stopTimeoutMs + graceMs);
      } catch {
        // Already gone, refused or too slow: it is killed below either way.
      }
    }
    // The management loop ends at EOF on stdin, and the process with it.
    child?.stdin?.end();
    const gone = (ms: number) => withTimeout(exited, ms).then(() => true, () => false);
    if (!(await gone(this.stopTimeoutMs + graceMs))) {
      child?.kill('SIGKILL');
      await gone(2_000);
    }
    this.dispose(bridge);
  }
}

/**
 * The bridge's child process. smartrust keeps it private (its `kill()` signals and forgets it,
 * dropping the exit event); the supervisor needs it to wait for the exit itself. Pinned by the
 * lockfile; `undefined` if a smartrust version moves it, and then the exit is not awaited.
 */
function childProcessOf(bridge: TBridge): ChildProcess | undefined {
  const transport = (bridge as unknown as { transport?: { childProcess?: unknown } }).transport;
  const child = transport?.childProcess;
  return child instanceof EventEmitter && typeof (child as ChildProcess).kill === 'function'
    ? (child as ChildProcess)
    : undefined;
}

/** `promise`, or a rejection after `ms`; the timer never outlives the race. */
async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name}: must be a positive number of ms`);
  return value;
}

export function describeExit(code: number | null, signal: string | null): string {
  if (signal !== null) return `killed by ${signal}`;
  return `exit code ${code ?? 'unknown'}`;
}
