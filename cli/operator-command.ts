import { readFile, writeFile } from 'node:fs/promises';
import { generateOperatorKeyPair, signPlacement } from '../mesh/claim-proof.js';
import { errorText, fetchJson } from './move-command.js';

/**
 * `cellmesh operator keygen` and `cellmesh operator place`: the operator's side of placements
 * (docs/mesh.md, "Trust: who may claim a merchant"; docs/operations.md, "The operator key").
 */

function fail(command: string, message: string, code = 1): never {
  process.stderr.write(`cellmesh operator ${command}: ${message}\n`);
  process.exit(code);
}

/** Writes a new private key (PKCS#8 PEM, owner-only) and prints the public key for `mesh.operatorKeys`. */
export async function runOperatorKeygenCommand(options: { out: string }): Promise<void> {
  const { privateKeyPem, publicKey } = generateOperatorKeyPair();
  // `wx`: never overwrite a key that may still be in use.
  await writeFile(options.out, privateKeyPem, { mode: 0o600, flag: 'wx' }).catch((error: NodeJS.ErrnoException) =>
    fail('keygen', error.code === 'EEXIST' ? `${options.out} exists already; choose another file` : `cannot write ${options.out}: ${error.message}`, 2),
  );
  process.stdout.write(`private key written to ${options.out} (keep it off the cells)\n`);
  process.stdout.write(`public key, for mesh.operatorKeys of every cell:\n${publicKey}\n`);
}

interface PlaceOptions {
  key: string;
  tenant: string;
  merchant: string;
  cell: string;
  epoch?: number;
  cluster?: string;
  adminToken?: string;
  force?: boolean;
}

/** What a placement on another cell leaves behind (docs/operations.md, "Re-homing a merchant whose cell will not return"). */
export function historyLostWarning(merchant: string, cell: string, home: string | undefined): string {
  const from = home === undefined ? 'its old home' : `cell ${home}`;
  return [
    `warning: a placement moves no data. ${cell} starts ${merchant} empty; what is on ${from}'s disk is lost to the merchant:`,
    '  its conversations and their history, read cursors, the desk (agents, groups, queues, open consultations, ratings), refresh tokens and attachments.',
    `  Messages customers left at fallback cells while ${from} was down wait there for ${from}; customers whose app still runs send them again to ${cell}.`,
    `  If ${from} can come back with its disk, restart it instead (its customers' messages are delivered then), or move the merchant with move-merchant once it is back.`,
  ].join('\n');
}

/**
 * Signs a placement of a merchant on a cell. With `--cluster`, looks up the cell's address (and,
 * without `--epoch`, the merchant's highest claimed epoch) there and hands the placement to the
 * cell; without it, prints the placement for `POST /v1/admin/merchants/place` on that cell.
 */
export async function runOperatorPlaceCommand(options: PlaceOptions): Promise<void> {
  const privateKeyPem = await readFile(options.key, 'utf8').catch((error: Error) => fail('place', `cannot read ${options.key}: ${error.message}`, 2));
  if (options.cluster === undefined) {
    if (options.epoch === undefined) fail('place', 'pass --epoch (above the merchant\'s epoch in /v1/admin/cluster), or --cluster to look it up', 2);
    process.stdout.write(`${JSON.stringify(sign(privateKeyPem, options, options.epoch))}\n`);
    process.stderr.write(`${historyLostWarning(options.merchant, options.cell, undefined)}\n`);
    return;
  }
  if (options.adminToken === undefined || options.adminToken === '') fail('place', 'pass --admin-token or set CELLMESH_ADMIN_TOKEN', 2);
  const base = options.cluster.replace(/\/$/, '');
  const headers = { authorization: `Bearer ${options.adminToken}`, 'content-type': 'application/json' };
  const view = await fetchJson(`${base}/v1/admin/cluster`, { headers }).catch((error: Error) => fail('place', `cannot reach ${base}: ${error.message}`));
  if (view.status !== 200) fail('place', `${base} refused the cluster view: ${errorText(view.body)}`);
  const cells = (view.body as { cells: Array<{ cellId: string; liveness: string; endpoints: { http: string }; merchants: Array<{ tenant: string; merchant: string; epoch: number }> }> }).cells;
  const target = cells.find((cell) => cell.cellId === options.cell);
  if (target === undefined) fail('place', `cell ${options.cell} is not in the cluster view of ${base}`);
  const claimed = cells.flatMap((cell) => cell.merchants.filter((claim) => claim.tenant === options.tenant && claim.merchant === options.merchant).map((claim) => ({ cell, epoch: claim.epoch })));
  const epoch = options.epoch ?? Math.max(0, ...claimed.map((claim) => claim.epoch)) + 1;
  // The claim the cells route to now, roughly (the highest epoch; the directory also checks proofs).
  const home = claimed.sort((left, right) => right.epoch - left.epoch || (left.cell.cellId < right.cell.cellId ? -1 : 1))[0]?.cell;
  if (home?.cellId !== options.cell) {
    if (home !== undefined && SERVING.has(home.liveness) && options.force !== true) {
      fail('place', `${options.merchant} is served by cell ${home.cellId} (${home.liveness}): move it with \`cellmesh move-merchant\`, which carries its data, or pass --force to place it anyway`);
    }
    process.stderr.write(`${historyLostWarning(options.merchant, options.cell, home?.cellId)}\n`);
  }
  const placed = await fetchJson(`${target.endpoints.http}/v1/admin/merchants/place`, {
    method: 'POST',
    headers,
    body: JSON.stringify(sign(privateKeyPem, options, epoch)),
  }).catch((error: Error) => fail('place', `cannot reach ${target.endpoints.http}: ${error.message}`));
  if (placed.status !== 200) fail('place', `the placement was refused: ${errorText(placed.body)}`);
  process.stdout.write(`placed: ${options.tenant}/${options.merchant} is homed on ${options.cell} at epoch ${epoch}\n`);
}

/** Livenesses of a home that still serves its merchants: placing elsewhere would make two homes with different data. */
const SERVING: ReadonlySet<string> = new Set(['alive', 'suspect', 'leaving']);

function sign(privateKeyPem: string, options: PlaceOptions, epoch: number): ReturnType<typeof signPlacement> {
  try {
    return signPlacement(privateKeyPem, { tenant: options.tenant, merchant: options.merchant, cell: options.cell, epoch });
  } catch (error) {
    return fail('place', `cannot sign with ${options.key}: ${(error as Error).message}`, 2);
  }
}
