// RemoteIngressEdge: the public side. Connects to the hub (TLS or QUIC), binds the ports the hub
// assigns, applies the hub's firewall snapshots, and tunnels every connection and datagram.

import { RemoteIngressBase } from './base.js';
import { RemoteIngressError } from './errors.js';
import type { IEdgeConfig, IEdgeStatus, IdleStatus } from './generated/ipc.js';
import type { IRemoteIngressOptions, IReplayStep } from './supervisor.js';
import { DEFAULT_SHUTDOWN_GRACE_SECS, EDGE_EVENT_NAMES, type TEdgeEvents } from './types.js';

export class RemoteIngressEdge extends RemoteIngressBase<TEdgeEvents> {
  private confirmedConfig: IEdgeConfig | undefined;

  constructor(options: IRemoteIngressOptions = {}) {
    super(EDGE_EVENT_NAMES, options);
  }

  /**
   * Starts `remoteingress-bin` (if needed) and the edge role: `{ token }` or
   * `{ hubHost, hubPort?, edgeId, secret }`, plus `bindAddress`, `transportMode`,
   * `hubCertSha256`, `stunServers`. Resolves once the edge runs; the tunnel comes up in the
   * background (`tunnelConnected`) and reconnects by itself.
   */
  async start(config: IEdgeConfig): Promise<IEdgeStatus> {
    const spawned = await this.supervisor.ensureProcess();
    let result;
    try {
      result = await this.supervisor.call('start', { role: 'edge', config }, { retryOnCrash: true });
    } catch (error) {
      if (spawned) await this.supervisor.shutdown();
      throw error;
    }
    const status = result as Partial<IEdgeStatus>;
    if (status.role !== 'edge') throw wrongRole('start', String(status.role));
    this.confirmedConfig = structuredClone(config);
    return status as IEdgeStatus;
  }

  /** The edge's status, or `{ running: false }` when it is not started. */
  async getStatus(): Promise<IEdgeStatus | IdleStatus> {
    const status = await this.statusOrIdle();
    if ('role' in status && status.role !== 'edge') throw wrongRole('getStatus', status.role);
    return status as IEdgeStatus | IdleStatus;
  }

  protected replaySteps(): IReplayStep[] {
    if (this.confirmedConfig === undefined) return [];
    return [{ method: 'start' as const, params: { role: 'edge' as const, config: this.confirmedConfig } }];
  }

  protected shutdownGraceSecs(): number {
    return this.confirmedConfig?.shutdownGraceSecs ?? DEFAULT_SHUTDOWN_GRACE_SECS;
  }

  protected clearConfiguration(): void {
    this.confirmedConfig = undefined;
  }
}

function wrongRole(method: string, role: string): RemoteIngressError {
  return new RemoteIngressError(`${method}: the binary runs the ${role} role, not the edge`, {
    code: 'wrong_role',
    method,
  });
}
