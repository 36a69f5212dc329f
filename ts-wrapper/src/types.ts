// Public types that are not in the IPC schema: the command map RustBridge is typed with, the
// event maps of the two classes, and the supervisor's events.

import type {
  EmptyResult,
  Event,
  IEgressListenerConfig,
  IEgressListenerInfo,
  IEgressTcpProxyInfo,
  IEgressTcpProxyRequest,
  NoParams,
  PingParams,
  PingResult,
  StartParams,
  StatusResult,
  StopEgressTcpListenerParams,
  StopEgressTcpProxyParams,
  UpdateAllowedEdgesParams,
  UpdateAllowedEdgesResult,
} from './generated/ipc.js';

/** Every management method with its params and result (RustBridge's command map). */
export type TRemoteIngressCommands = {
  start: { params: StartParams; result: StatusResult };
  stop: { params: NoParams; result: EmptyResult };
  getStatus: { params: NoParams; result: StatusResult };
  ping: { params: PingParams; result: PingResult };
  updateAllowedEdges: { params: UpdateAllowedEdgesParams; result: UpdateAllowedEdgesResult };
  startEgressTcpProxy: { params: IEgressTcpProxyRequest; result: IEgressTcpProxyInfo };
  stopEgressTcpProxy: { params: StopEgressTcpProxyParams; result: EmptyResult };
  startEgressTcpListener: { params: IEgressListenerConfig; result: IEgressListenerInfo };
  stopEgressTcpListener: { params: StopEgressTcpListenerParams; result: EmptyResult };
};

/** Event name -> payload, for every event the binary emits. */
export type TIpcEventMap = { [E in Event as E['event']]: E['data'] };
export type TIpcEventName = keyof TIpcEventMap;

/** Events of the hub role, re-emitted by RemoteIngressHub under the same names. */
/** Default of `shutdownGraceSecs` (hub and edge), as the binary applies it. */
export const DEFAULT_SHUTDOWN_GRACE_SECS = 10;

export const HUB_EVENT_NAMES = [
  'edgeConnected',
  'edgeDisconnected',
  'edgeAuthFailed',
  'edgeDuplicateRefused',
  'streamOpened',
  'streamClosed',
  'streamSummary',
  'egressConnection',
] as const satisfies readonly TIpcEventName[];

/** Events of the edge role, re-emitted by RemoteIngressEdge under the same names. */
export const EDGE_EVENT_NAMES = [
  'tunnelConnected',
  'tunnelDisconnected',
  'tunnelConnectFailed',
  'publicIpDiscovered',
  'portsAssigned',
  'portsUpdated',
  'portBindFailed',
  'firewallConfigUpdated',
  'firewallUnavailable',
] as const satisfies readonly TIpcEventName[];

export type THubEventName = (typeof HUB_EVENT_NAMES)[number];
export type TEdgeEventName = (typeof EDGE_EVENT_NAMES)[number];

// Compile-time check that the two lists plus `ready`/`ipcError` cover every event in the schema:
// a new event in the schema fails the build until it is assigned to a role.
type TUnassignedEvent = Exclude<TIpcEventName, THubEventName | TEdgeEventName | 'ready' | 'ipcError'>;
const everyEventAssigned: [TUnassignedEvent] extends [never] ? true : TUnassignedEvent = true;
void everyEventAssigned;

/** `crashRecovered`: the binary died, was restarted, and its configuration was replayed. */
export interface ICrashRecoveredEvent {
  /** Restart attempts this recovery took (1 when the first restart worked). */
  attempts: number;
  /** Exit code of the process that died (null when killed by a signal). */
  exitCode: number | null;
  /** Signal that killed it, if any. */
  signal: string | null;
  /** Milliseconds from the crash to the replayed configuration. */
  downtimeMs: number;
  /** PID of the new process. */
  pid: number | undefined;
}

/** `crashRecoveryFailed`: restarts ran out; pending and waiting calls were rejected. */
export interface ICrashRecoveryFailedEvent {
  /** Restart attempts made. */
  attempts: number;
  /** Exit code of the process that died first (null when killed by a signal). */
  exitCode: number | null;
  /** Signal that killed it, if any. */
  signal: string | null;
  /** Why the last attempt failed. */
  error: Error;
}

/** Events the supervisor adds to both classes. */
export type TSupervisorEvents = {
  crashRecovered: [ICrashRecoveredEvent];
  crashRecoveryFailed: [ICrashRecoveryFailedEvent];
  /** One line the binary wrote to stderr (its log). */
  log: [line: string];
  /** The binary could not handle a line the wrapper sent (a wrapper bug; never expected). */
  ipcError: [TIpcEventMap['ipcError']];
};

export type THubEvents = { [K in THubEventName]: [TIpcEventMap[K]] } & TSupervisorEvents;
export type TEdgeEvents = { [K in TEdgeEventName]: [TIpcEventMap[K]] } & TSupervisorEvents;
