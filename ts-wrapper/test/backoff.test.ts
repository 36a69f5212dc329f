// The restart policy: validated options, exponential delays with a cap, the attempt window.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { DEFAULT_RESTART_POLICY, RestartBackoff, resolveRestartPolicy } from '../src/backoff.js';

describe('restart backoff', () => {
  test('defaults: 500 ms doubling to 30 s, 5 attempts per minute', () => {
    assert.deepEqual(resolveRestartPolicy(), { ...DEFAULT_RESTART_POLICY });
    const backoff = new RestartBackoff({ jitter: 0, maxAttempts: 10, windowMs: 1e9 });
    const delays = Array.from({ length: 10 }, (_, i) => backoff.next(i));
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
    assert.equal(backoff.next(10), undefined, 'the 11th attempt within the window gives up');
  });

  test('attempts leave the window as time passes, and the delay shrinks again', () => {
    const backoff = new RestartBackoff({ jitter: 0, maxAttempts: 2, windowMs: 1_000 });
    assert.equal(backoff.next(0), 500);
    assert.equal(backoff.next(100), 1000);
    assert.equal(backoff.next(200), undefined);
    assert.equal(backoff.next(1_050), 1000, 'one attempt (at 100) still in the window');
    assert.equal(backoff.next(5_000), 500, 'a quiet window starts over');
    backoff.reset();
    assert.equal(backoff.attemptsWithin(5_000), 0);
  });

  test('jitter only shortens a delay, by at most its fraction', () => {
    const low = new RestartBackoff({ jitter: 0.5, maxAttempts: 1 }, () => 0.999999);
    const high = new RestartBackoff({ jitter: 0.5, maxAttempts: 1 }, () => 0);
    assert.equal(low.next(0), 250);
    assert.equal(high.next(0), 500);
    for (let i = 0; i < 200; i += 1) {
      const delay = new RestartBackoff({ maxAttempts: 1 }).next(0) as number;
      assert.ok(delay <= 500 && delay >= 400, String(delay));
    }
  });

  test('bad options fail at construction with the option named', () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ initialDelayMs: -1 }, /initialDelayMs/],
      [{ initialDelayMs: 1_000, maxDelayMs: 10 }, /maxDelayMs: must be >= initialDelayMs/],
      [{ multiplier: 0.5 }, /multiplier/],
      [{ jitter: 2 }, /jitter/],
      [{ maxAttempts: 1.5 }, /maxAttempts/],
      [{ windowMs: 0 }, /windowMs/],
      [{ initialDelayMs: 'soon' }, /initialDelayMs: must be a number/],
      [{ retries: 3 }, /retries: unknown option/],
    ];
    for (const [options, message] of cases) {
      assert.throws(() => new RestartBackoff(options), message, JSON.stringify(options));
    }
  });
});
