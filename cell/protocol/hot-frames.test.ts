import { describe, expect, it } from 'vitest';
import { AckFrame, ReadFrame, SendFrame } from './frames.js';
import { decodeAck, decodeRead, decodeSend } from './hot-frames.js';
import { parseClientFrame } from './parse-client-frame.js';

/** A small seeded generator (mulberry32): the same frames every run. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const hex64 = 'ab'.repeat(32);
// Values near every edge of the schemas, and values of the wrong type.
const strings = ['', 'a', 'x'.repeat(64), 'x'.repeat(65), 'é', '\uD83D\uDE00', '\uD83D', 'a\uDC00', 'm1:c1', 'm1:', ':c1', 'm 1:c1', 'm1:c1:d', `${'m'.repeat(64)}:${'c'.repeat(64)}`, `${'m'.repeat(65)}:c`, 'm.1-_:C_9'];
const conversations = ['m1:c1', 'm2:c2', 'm1:c1:x', 'm1', '', `${'m'.repeat(64)}:${'c'.repeat(64)}`, 'm-1:c.2', 'm1:c 1', '__proto__', 'constructor'];
const numbers = [0, -0, 1, 7, -1, 1.5, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER + 1, 1e300];
const others: unknown[] = [null, true, [], {}, '1', ['m1:c1']];
// Mostly valid identifiers and ids, with a few of each way to be wrong.
const ids = ['a', 'x'.repeat(64), 'é', '\uD83D\uDE00', 'c-1', 'm1:c1', 'g.1', '', 'x'.repeat(65), '\uD83D', 'a b'];

function pick<T>(random: () => number, values: readonly T[]): T {
  return values[Math.floor(random() * values.length)]!;
}

/** Sometimes absent, mostly of the right kind, sometimes anything. */
function field(random: () => number, right: readonly unknown[], absent = 0.15): unknown {
  const roll = random();
  if (roll < absent) return undefined;
  if (roll < 0.92) return pick(random, right);
  return pick(random, [...others, ...strings, ...numbers]);
}

function withFields(fields: Record<string, unknown>): Record<string, unknown> {
  // Through JSON, as frames arrive: absent fields vanish, -0 becomes 0.
  return JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)))) as Record<string, unknown>;
}

function sendFrame(random: () => number): Record<string, unknown> {
  const attachments = random() < 0.5 ? undefined : random() < 0.8 ? [hex64, 'cd'.repeat(32)].slice(0, 1 + Math.floor(random() * 2)) : pick(random, [[], [hex64, hex64], ['AB'.repeat(32)], Array.from({ length: 11 }, (_, index) => index.toString(16).padStart(64, '0')), 'x']);
  return withFields({
    op: 'send',
    id: field(random, ids, 0.5),
    conv: field(random, conversations, 0.03),
    cmid: field(random, ids, 0.03),
    body: field(random, ['', 'hello', 'hello', 'x'.repeat(16_384), 'x'.repeat(16_385)], 0.03),
    attachments,
    group: field(random, [...ids, ...strings], 0.7),
    extra: random() < 0.2 ? 'ignored' : undefined,
  });
}

function ackFrame(random: () => number): Record<string, unknown> {
  if (random() < 0.4) return withFields({ op: 'ack', conv: field(random, conversations), seq: field(random, numbers), acks: random() < 0.1 ? { 'm1:c1': 1 } : undefined });
  const count = pick(random, [0, 1, 2, 5, 256, 257]);
  const acks: Record<string, unknown> = {};
  for (let index = 0; index < count; index++) acks[random() < 0.97 ? `m${index % 7}:c${index}` : pick(random, conversations)] = random() < 0.97 ? index : pick(random, [...numbers, ...others]);
  return withFields({ op: 'ack', acks: random() < 0.9 ? acks : pick(random, others), conv: random() < 0.05 ? 'm1:c1' : undefined });
}

function readFrame(random: () => number): Record<string, unknown> {
  return withFields({ op: 'read', id: field(random, strings), conv: field(random, conversations), seq: field(random, numbers) });
}

const cases = [
  { op: 'send', generate: sendFrame, decode: decodeSend, schema: SendFrame },
  { op: 'ack', generate: ackFrame, decode: decodeAck, schema: AckFrame },
  { op: 'read', generate: readFrame, decode: decodeRead, schema: ReadFrame },
] as const;

describe('hand-checked decoders of the hot frames', () => {
  for (const { op, generate, decode, schema } of cases) {
    it(`agree with the ${op} schema on 20,000 generated frames, valid and not`, () => {
      const random = seeded(op.length * 7919);
      let valid = 0;
      for (let index = 0; index < 20_000; index++) {
        const raw = generate(random);
        const expected = schema.safeParse(raw);
        const decoded = decode(raw);
        if (expected.success) {
          valid++;
          expect(decoded, JSON.stringify(raw)).toStrictEqual(expected.data);
        } else {
          expect(decoded, JSON.stringify(raw)).toBeUndefined();
        }
      }
      // Both kinds must be well represented, or the agreement proves little.
      expect(valid).toBeGreaterThan(1_000);
      expect(valid).toBeLessThan(19_000);
    });
  }

  it('leaves the schema to word the error of a frame it does not accept', () => {
    expect(() => parseClientFrame(JSON.stringify({ op: 'send', conv: 'm1', cmid: 'a', body: 'x' }))).toThrow(/send: `conv` must be <merchant>:<customer>/);
    expect(() => parseClientFrame(JSON.stringify({ op: 'ack', conv: 'm1:c1', seq: 1, acks: { 'm1:c1': 1 } }))).toThrow(/give either `conv` and `seq`, or `acks`/);
    expect(parseClientFrame(JSON.stringify({ op: 'read', conv: 'm1:c1', seq: 3, extra: 1 }))).toStrictEqual({ op: 'read', conv: 'm1:c1', seq: 3 });
  });
});
