import { randomBytes } from 'node:crypto';

/** The randomness port: core code draws random numbers only through a Random. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
}

/** A random integer in [0, maxExclusive). */
export function randomInt(random: Random, maxExclusive: number): number {
  return Math.floor(random.next() * maxExclusive);
}

/** A random identifier of `length` characters from [0-9a-z]. */
export function randomId(random: Random, length = 16): string {
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
  let id = '';
  for (let index = 0; index < length; index++) id += alphabet[randomInt(random, alphabet.length)];
  return id;
}

/**
 * A seeded generator (sfc32, seeded through splitmix32): the same seed gives the same sequence
 * on every machine, which the simulator and tests rely on for replay.
 */
export class SeededRandom implements Random {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let state = seed >>> 0;
    const splitmix = (): number => {
      state = (state + 0x9e3779b9) >>> 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = splitmix();
    this.b = splitmix();
    this.c = splitmix();
    this.d = splitmix();
    for (let round = 0; round < 12; round++) this.next();
  }

  next(): number {
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t / 4294967296;
  }
}

/** The production source: the operating system's cryptographic generator. */
export class SystemRandom implements Random {
  private buffer = Buffer.alloc(0);
  private offset = 0;

  next(): number {
    if (this.offset + 4 > this.buffer.length) {
      this.buffer = randomBytes(4096);
      this.offset = 0;
    }
    const value = this.buffer.readUInt32LE(this.offset);
    this.offset += 4;
    return value / 4294967296;
  }
}
