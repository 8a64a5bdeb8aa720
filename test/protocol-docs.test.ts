/**
 * docs/protocol.md is the contract: every error code of cell/protocol/errors.ts has its row
 * there with its HTTP status, no row names a code that does not exist, and the in-band
 * refusals of browsers are documented with the close codes the cell uses.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { ErrorCode, httpStatusOf, inBandRejectionCloseCodes } from '../cell/protocol/errors.js';
import { REPO_ROOT } from './harness.js';

const protocolDoc = (): Promise<string> => readFile(join(REPO_ROOT, 'docs', 'protocol.md'), 'utf8');

test('the error table of docs/protocol.md lists every code with its HTTP status, and no other', async () => {
  const rows = [...(await protocolDoc()).matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \|/gm)].map((match) => [match[1], Number(match[2])]);
  const codes = Object.values(ErrorCode).map((code) => [code, httpStatusOf[code]]);
  expect(rows.sort()).toEqual(codes.sort());
});

test('the in-band refusals of docs/protocol.md name each code with its close code', async () => {
  const paragraph = (await protocolDoc()).split('**Refusals a browser can read.**')[1]?.split('\n\n')[0] ?? '';
  const documented = new Map<string, number>();
  for (const [, close, codes] of paragraph.matchAll(/(4\d{3}) for ((?:`[A-Z_]+`(?:, | and |,? or )?)+)/g)) {
    for (const [, code] of codes!.matchAll(/`([A-Z_]+)`/g)) documented.set(code!, Number(close));
  }
  expect(Object.fromEntries(documented)).toEqual(inBandRejectionCloseCodes);
});
