import { describe, expect, it } from 'vitest';
import { KeyedRateLimiter } from './keyed-rate-limiter.js';

describe('KeyedRateLimiter', () => {
  it('allows a burst per key, then answers how long to wait', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 1, burst: 2, maxKeys: 10 });
    expect([limiter.take('a', 0), limiter.take('a', 0), limiter.take('a', 0)]).toEqual([0, 0, 1000]);
    expect(limiter.take('b', 0)).toBe(0);
    expect(limiter.take('a', 1000)).toBe(0);
  });

  it('forgets keys whose buckets refilled, and the least recently seen past maxKeys', () => {
    const limiter = new KeyedRateLimiter({ ratePerSecond: 1, burst: 2, maxKeys: 3 });
    for (const key of ['a', 'b', 'c']) limiter.take(key, 0);
    limiter.take('a', 500);
    limiter.take('d', 600);
    expect(limiter.size).toBe(3);
    // 'a' was seen lately and kept its spent tokens; 'b' was seen least recently and went.
    expect(limiter.take('a', 600)).toBe(400);
    expect(limiter.take('b', 600)).toBe(0);
    expect(limiter.take('b', 600)).toBe(0);
    expect(limiter.size).toBe(3);
    limiter.take('e', 10_000);
    expect(limiter.size).toBe(1);
  });
});
