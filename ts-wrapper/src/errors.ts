// Errors the wrapper throws. Failures reported by the binary keep its stable IPC `code`
// (`invalid_params`, `already_started`, ...); failures of the process itself use the wrapper's
// own codes below.

import type { ErrorCode } from './generated/ipc.js';

/** Codes for failures of the process rather than of a request. */
export type TWrapperErrorCode =
  /** No `remoteingress-bin` could be found. */
  | 'binary_not_found'
  /** The binary could not be started, or did not announce itself as ready. */
  | 'spawn_failed'
  /** The binary exited while a request was in flight. */
  | 'binary_exited'
  /** The binary did not answer within the request timeout. */
  | 'timeout'
  /** The binary crashed and the supervisor gave up restarting it. */
  | 'crash_recovery_failed'
  /** A call waited for a crash recovery longer than `restartWaitTimeoutMs`. */
  | 'recovery_timeout'
  /** The call needs a running hub/edge; `start()` it first. */
  | 'not_started'
  /** `stop()` was called while the request waited. */
  | 'stopped';

export type TRemoteIngressErrorCode = ErrorCode | TWrapperErrorCode;

export class RemoteIngressError extends Error {
  /** Stable code: the binary's IPC error code, or one of the wrapper's own. */
  readonly code: TRemoteIngressErrorCode | undefined;
  /** The IPC method the error belongs to, when there is one. */
  readonly method: string | undefined;

  constructor(message: string, options: { code?: TRemoteIngressErrorCode; method?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RemoteIngressError';
    this.code = options.code;
    this.method = options.method;
  }
}
