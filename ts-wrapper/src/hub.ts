// RemoteIngressHub: the private side. Accepts edge tunnels and forwards their traffic to the
// target host with PROXY headers; pushes ports and firewall snapshots to edges.

import os from 'node:os';
import path from 'node:path';

import { RemoteIngressBase } from './base.js';
import { RemoteIngressError } from './errors.js';
import type {
  IEgressListenerConfig,
  IEgressListenerInfo,
  IEgressTcpProxyInfo,
  IEgressTcpProxyRequest,
  IHubConfig,
  IHubStatus,
  IdleStatus,
  TAllowedEdge,
  UpdateAllowedEdgesResult,
} from './generated/ipc.js';
import type { IRemoteIngressOptions, IReplayStep } from './supervisor.js';
import { DEFAULT_SHUTDOWN_GRACE_SECS, HUB_EVENT_NAMES, type THubEvents } from './types.js';

export class RemoteIngressHub extends RemoteIngressBase<THubEvents> {
  /** Last `start` config the binary accepted, with an ephemeral tunnel port pinned. */
  private confirmedConfig: IHubConfig | undefined;
  /** Last edge list the binary accepted. */
  private confirmedEdges: TAllowedEdge[] | undefined;

  constructor(options: IRemoteIngressOptions = {}) {
    super(HUB_EVENT_NAMES, options);
  }

  /**
   * Starts `remoteingress-bin` (if needed) and the hub role. Resolves with the hub's status,
   * whose `tunnelPort` is the bound port (useful with `tunnelPort: 0`) and `certSha256` the
   * fingerprint edges can pin. Without `tls` or `stateDir`, the hub keeps its generated identity
   * in {@link defaultStateDir}, so the fingerprint survives crash restarts and restarts of the
   * application.
   */
  async start(requested: IHubConfig = {}): Promise<IHubStatus> {
    const config =
      requested.tls === undefined && requested.stateDir === undefined
        ? { ...requested, stateDir: defaultStateDir() }
        : requested;
    const spawned = await this.supervisor.ensureProcess();
    let result;
    try {
      result = await this.supervisor.call('start', { role: 'hub', config }, { retryOnCrash: true });
    } catch (error) {
      if (spawned) await this.supervisor.shutdown();
      throw error;
    }
    const status = asHubStatus(result, 'start');
    // After a crash the hub must come back on the same port, or edges could not reconnect.
    this.confirmedConfig = config.tunnelPort === 0 ? { ...config, tunnelPort: status.tunnelPort } : { ...config };
    this.confirmedEdges = undefined;
    return status;
  }

  /**
   * Replaces the complete list of edges the hub accepts. Connected edges get their new ports and
   * firewall config at once; removed edges (or changed secrets) are disconnected.
   */
  async updateAllowedEdges(edges: TAllowedEdge[]): Promise<UpdateAllowedEdgesResult> {
    const copy = structuredClone(edges);
    const result = await this.supervisor.call('updateAllowedEdges', { edges: copy }, { retryOnCrash: true });
    this.confirmedEdges = copy;
    return result;
  }

  /** The hub's status, or `{ running: false }` when it is not started. */
  async getStatus(): Promise<IHubStatus | IdleStatus> {
    const status = await this.statusOrIdle();
    if ('role' in status && status.role !== 'hub') throw wrongRole('getStatus', status.role);
    return status as IHubStatus | IdleStatus;
  }

  /**
   * Opens a one-shot TCP proxy on 127.0.0.1 that dials out through a QUIC-connected edge
   * (egress). Not retried after a crash: the proxy would have died with the process.
   */
  async startEgressTcpProxy(request: IEgressTcpProxyRequest): Promise<IEgressTcpProxyInfo> {
    return this.supervisor.call('startEgressTcpProxy', request, { retryOnCrash: false });
  }

  /** Removes an egress proxy that was not used. */
  async stopEgressTcpProxy(proxyId: string): Promise<void> {
    await this.supervisor.call('stopEgressTcpProxy', { proxyId }, { retryOnCrash: false });
  }

  /**
   * Opens a persistent egress listener on `config.listenAddr` (e.g. `127.0.0.1:2525`, or port 0
   * for any free port): every connection it accepts dials out through `config.edgeId` under that
   * edge's policy, and is closed at once while the edge is not connected over QUIC. Not retried
   * after a crash, and not reopened by the restarted binary: call it again on `crashRecovered`.
   */
  async startEgressTcpListener(config: IEgressListenerConfig): Promise<IEgressListenerInfo> {
    return this.supervisor.call('startEgressTcpListener', config, { retryOnCrash: false });
  }

  /** Closes a persistent egress listener; its open connections finish. */
  async stopEgressTcpListener(listenerId: string): Promise<void> {
    await this.supervisor.call('stopEgressTcpListener', { listenerId }, { retryOnCrash: false });
  }

  protected replaySteps(): IReplayStep[] {
    if (this.confirmedConfig === undefined) return [];
    const steps: IReplayStep[] = [
      { method: 'start', params: { role: 'hub', config: this.confirmedConfig } },
    ];
    if (this.confirmedEdges !== undefined) {
      steps.push({ method: 'updateAllowedEdges', params: { edges: this.confirmedEdges } });
    }
    return steps;
  }

  protected shutdownGraceSecs(): number {
    return this.confirmedConfig?.shutdownGraceSecs ?? DEFAULT_SHUTDOWN_GRACE_SECS;
  }

  protected clearConfiguration(): void {
    this.confirmedConfig = undefined;
    this.confirmedEdges = undefined;
  }
}

/**
 * Where a hub keeps its generated identity unless told otherwise, as the binary's CLI does:
 * `/var/lib/remoteingress` for root, else `$XDG_STATE_HOME/remoteingress` (or
 * `~/.local/state/remoteingress`).
 */
export function defaultStateDir(): string {
  if (process.geteuid?.() === 0) return '/var/lib/remoteingress';
  const base = process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(base, 'remoteingress');
}

function asHubStatus(result: unknown, method: string): IHubStatus {
  const status = result as Partial<IHubStatus>;
  if (status.role !== 'hub') throw wrongRole(method, String(status.role));
  return status as IHubStatus;
}

function wrongRole(method: string, role: string): RemoteIngressError {
  return new RemoteIngressError(`${method}: the binary runs the ${role} role, not the hub`, {
    code: 'wrong_role',
    method,
  });
}
