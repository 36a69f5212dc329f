// @remoteingress/ts-wrapper: drive `remoteingress-bin` from TypeScript.

export { RemoteIngressHub, defaultStateDir } from './hub.js';
export { RemoteIngressEdge } from './edge.js';
export {
  encodeConnectionToken,
  decodeConnectionToken,
  ConnectionTokenError,
  type IConnectionTokenData,
  type TConnectionTokenErrorKind,
} from './token.js';
export { runCli, planRole, EXIT_USAGE, type IRunCliOptions, type TPlan, type IHubPlan, type IEdgePlan } from './cli.js';
export { RemoteIngressError, type TRemoteIngressErrorCode, type TWrapperErrorCode } from './errors.js';
export { DEFAULT_RESTART_POLICY, type IRestartPolicy } from './backoff.js';
export { findBinary, BINARY_ENV_VAR, BINARY_NAME } from './binary.js';
export { IPC_PROTOCOL_VERSION, type IRemoteIngressOptions } from './supervisor.js';
export {
  HUB_EVENT_NAMES,
  EDGE_EVENT_NAMES,
  type THubEvents,
  type TEdgeEvents,
  type THubEventName,
  type TEdgeEventName,
  type TIpcEventMap,
  type TIpcEventName,
  type TRemoteIngressCommands,
  type ICrashRecoveredEvent,
  type ICrashRecoveryFailedEvent,
} from './types.js';
// Every IPC type, generated from ipc-schema/remoteingress-ipc.schema.json: IHubConfig,
// IEdgeConfig, TAllowedEdge, IFirewallConfig, IFirewallRateLimit, IFirewallRule, IEgressPolicy,
// IEgressTcpProxyRequest, IEgressTcpProxyInfo, IHubStatus, IEdgeStatus, IConnectedEdgeStatus,
// TStreamEventMode, TTransportMode, TAddressFamilyPreference, the event payloads, ...
export type * from './generated/ipc.js';
