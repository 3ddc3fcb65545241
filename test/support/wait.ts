// Waiting for what another process or the kernel does: the one polling loop of the tests and
// benchmarks.
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Resolves once `cond()` holds, checking every `intervalMs`; rejects with "timed out waiting for
 * WHAT" after `timeoutMs`. `cond` may throw to give up at once (a child that exited).
 */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 5000, intervalMs = 5): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** `fn()`'s result once it stops throwing (a daemon restarting); its last error after `timeoutMs`. */
export async function retry<T>(fn: () => Promise<T>, timeoutMs: number, intervalMs = 10): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(intervalMs);
    }
  }
}
