// Restart policy of the supervisor: exponential backoff with optional jitter, and a cap on
// restarts within a sliding window (after linkerd's exp-backoff: validated up front, so a bad
// option fails at construction, not at the first crash).

/** Restart policy options (all optional; defaults in `DEFAULT_RESTART_POLICY`). */
export interface IRestartPolicy {
  /** Delay before the first restart, in ms. Default 500. */
  initialDelayMs?: number;
  /** Largest delay between restarts, in ms. Default 30000. */
  maxDelayMs?: number;
  /** Factor applied to the delay after each restart within the window. Default 2. */
  multiplier?: number;
  /** Fraction (0..1) of each delay that is randomised downwards. Default 0.2. */
  jitter?: number;
  /** Most restart attempts within `windowMs`; one more crash gives up. Default 5. */
  maxAttempts?: number;
  /** Sliding window for `maxAttempts`, in ms. Default 60000. */
  windowMs?: number;
}

export const DEFAULT_RESTART_POLICY: Readonly<Required<IRestartPolicy>> = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  multiplier: 2,
  jitter: 0.2,
  maxAttempts: 5,
  windowMs: 60_000,
});

/** Validates `options` over the defaults; throws a RangeError naming the bad option. */
export function resolveRestartPolicy(options: IRestartPolicy = {}): Required<IRestartPolicy> {
  const policy = { ...DEFAULT_RESTART_POLICY };
  for (const [key, value] of Object.entries(options) as Array<[keyof IRestartPolicy, unknown]>) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_RESTART_POLICY)) throw new RangeError(`restart.${key}: unknown option`);
    if (typeof value !== 'number' || Number.isNaN(value)) {
      throw new RangeError(`restart.${key}: must be a number`);
    }
    policy[key] = value;
  }
  const check = (ok: boolean, message: string): void => {
    if (!ok) throw new RangeError(`restart.${message}`);
  };
  check(Number.isFinite(policy.initialDelayMs) && policy.initialDelayMs >= 0, 'initialDelayMs: must be >= 0');
  check(
    Number.isFinite(policy.maxDelayMs) && policy.maxDelayMs >= policy.initialDelayMs,
    'maxDelayMs: must be >= initialDelayMs',
  );
  check(Number.isFinite(policy.multiplier) && policy.multiplier >= 1, 'multiplier: must be >= 1');
  check(policy.jitter >= 0 && policy.jitter <= 1, 'jitter: must be within 0..1');
  check(Number.isInteger(policy.maxAttempts) && policy.maxAttempts >= 0, 'maxAttempts: must be an integer >= 0');
  check(Number.isFinite(policy.windowMs) && policy.windowMs > 0, 'windowMs: must be > 0');
  return policy;
}

/**
 * Decides whether and when to restart. Pure apart from the clock and random source it is given,
 * so tests can drive it with fixed values.
 */
export class RestartBackoff {
  private readonly policy: Required<IRestartPolicy>;
  private attempts: number[] = [];

  constructor(
    options: IRestartPolicy = {},
    private readonly random: () => number = Math.random,
  ) {
    this.policy = resolveRestartPolicy(options);
  }

  get options(): Readonly<Required<IRestartPolicy>> {
    return this.policy;
  }

  /** Attempts made within the window ending at `now`. */
  attemptsWithin(now: number): number {
    this.attempts = this.attempts.filter((at) => now - at < this.policy.windowMs);
    return this.attempts.length;
  }

  /**
   * Registers a new attempt at `now` and returns the delay to wait before it, or `undefined`
   * when `maxAttempts` attempts were already made within the window (give up).
   */
  next(now: number): number | undefined {
    const previous = this.attemptsWithin(now);
    if (previous >= this.policy.maxAttempts) return undefined;
    this.attempts.push(now);
    const base = Math.min(
      this.policy.maxDelayMs,
      this.policy.initialDelayMs * this.policy.multiplier ** previous,
    );
    return Math.round(base * (1 - this.policy.jitter * this.random()));
  }

  /** Forgets past attempts (after an explicit stop/start). */
  reset(): void {
    this.attempts = [];
  }
}
