import { describe, expect, it } from 'vitest';
import { InvariantError, invariant } from './invariant.js';

describe('invariant', () => {
  it('passes silently and builds no message when the condition holds', () => {
    let described = 0;
    invariant(true, () => `${++described}`);
    expect(described).toBe(0);
  });

  it('throws an InvariantError with a stable code and the described figures', () => {
    const failing = (): void => invariant(3 > 4, () => 'seq 4 after 3');
    expect(failing).toThrow(InvariantError);
    expect(failing).toThrow('invariant broken: seq 4 after 3');
    try {
      failing();
    } catch (error) {
      expect((error as InvariantError).code).toBe('INVARIANT_BROKEN');
      expect((error as InvariantError).name).toBe('InvariantError');
    }
  });
});
