import type { BlockRecord } from '../cell/desk/customer-blocks.js';
import { adminCall, printJson, type AdminOptions } from './admin-call.js';

/**
 * `cellmesh blocks list|add|remove`: a merchant's blocks of customers, through its home cell's
 * admin API (docs/desk.md, "Blocks"; docs/operations.md). A block closes the customer's open
 * consultation and refuses its messages to the merchant until it is removed.
 */

interface BlocksOptions extends AdminOptions {
  tenant: string;
  merchant: string;
}

export async function runBlocksListCommand(options: BlocksOptions & { limit?: number; after?: string }): Promise<void> {
  const query = new URLSearchParams();
  if (options.after !== undefined) query.set('after', options.after);
  if (options.limit !== undefined) query.set('limit', String(options.limit));
  const page = (await adminCall(options, 'GET', `${blocksPath(options)}${query.size > 0 ? `?${query}` : ''}`)) as { blocks: BlockRecord[]; next?: string };
  if (options.json === true) return printJson(page);
  if (page.blocks.length === 0 && options.after === undefined) return void process.stdout.write(`merchant ${options.merchant} has blocked no customers\n`);
  for (const block of page.blocks) process.stdout.write(`${blockLine(block)}\n`);
  if (page.next !== undefined) process.stdout.write(`more: --after ${page.next}\n`);
}

export async function runBlocksAddCommand(customer: string, options: BlocksOptions & { reason?: string }): Promise<void> {
  const block = (await adminCall(options, 'PUT', blockPath(options, customer), options.reason === undefined ? {} : { reason: options.reason })) as BlockRecord;
  if (options.json === true) return printJson(block);
  process.stdout.write(`blocked ${blockLine(block)}\n`);
}

export async function runBlocksRemoveCommand(customer: string, options: BlocksOptions): Promise<void> {
  const body = (await adminCall(options, 'DELETE', blockPath(options, customer))) as { unblocked: BlockRecord };
  if (options.json === true) return printJson(body);
  process.stdout.write(`unblocked customer ${body.unblocked.customer} of ${options.tenant}/${options.merchant}\n`);
}

function blocksPath(options: BlocksOptions): string {
  return `/v1/admin/tenants/${encodeURIComponent(options.tenant)}/merchants/${encodeURIComponent(options.merchant)}/blocks`;
}

function blockPath(options: BlocksOptions, customer: string): string {
  return `${blocksPath(options)}/${encodeURIComponent(customer)}`;
}

function blockLine(block: BlockRecord): string {
  const reason = block.reason === undefined ? '' : `  "${block.reason}"`;
  return `${block.customer}  since ${new Date(block.atMs).toISOString()}  by ${block.by}${reason}`;
}
