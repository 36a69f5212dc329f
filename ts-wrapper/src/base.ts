// What RemoteIngressHub and RemoteIngressEdge share: the supervisor, event forwarding, and the
// process-level API (`running`, `pid`, `stop()`).

import { EventEmitter } from 'node:events';

import type { IdleStatus, StatusResult } from './generated/ipc.js';
import { Supervisor, type IRemoteIngressOptions, type IReplayStep } from './supervisor.js';
import type { TSupervisorEvents } from './types.js';

export abstract class RemoteIngressBase<
  TEvents extends Record<keyof TEvents, unknown[]> & TSupervisorEvents,
> extends EventEmitter<TEvents> {
  protected readonly supervisor: Supervisor;

  protected constructor(eventNames: readonly string[], options: IRemoteIngressOptions) {
    super();
    // Untyped view for forwarding names that come from the binary.
    const emit = (name: string, ...args: unknown[]): void => {
      (EventEmitter.prototype.emit as (this: EventEmitter, n: string, ...a: unknown[]) => boolean).call(
        this as unknown as EventEmitter,
        name,
        ...args,
      );
    };
    this.supervisor = new Supervisor(options, {
      eventNames,
      onEvent: (name, data) => emit(name, data),
      onLog: (line) => emit('log', line),
      replaySteps: () => this.replaySteps(),
      onCrashRecovered: (event) => emit('crashRecovered', event),
      onCrashRecoveryFailed: (event) => emit('crashRecoveryFailed', event),
    });
  }

  /** The requests that restore this role's last confirmed configuration on a fresh process. */
  protected abstract replaySteps(): IReplayStep[];

  /** Forgets the confirmed configuration (after stop). */
  protected abstract clearConfiguration(): void;

  /** The role's `shutdownGraceSecs` (default 10), for how long a graceful stop may take. */
  protected abstract shutdownGraceSecs(): number;

  /** Whether the binary is alive and answering (false while stopped or restarting). */
  get running(): boolean {
    return this.supervisor.running;
  }

  /** PID of the current `remoteingress-bin` process, when one runs. */
  get pid(): number | undefined {
    return this.supervisor.pid;
  }

  /**
   * Graceful shutdown: stops accepting, lets open streams finish for the role's
   * `shutdownGraceSecs` (default 10 s) and resets the rest, closes tunnels (an edge removes its
   * nftables table), then ends the process and waits until it is gone. Never triggers a
   * restart; idempotent.
   */
  async stop(): Promise<void> {
    const graceMs = this.shutdownGraceSecs() * 1000;
    this.clearConfiguration();
    await this.supervisor.shutdown(graceMs);
  }

  protected async statusOrIdle(): Promise<StatusResult> {
    if (!this.supervisor.active) return { running: false } satisfies IdleStatus;
    return this.supervisor.call('getStatus', {}, { retryOnCrash: true });
  }
}
