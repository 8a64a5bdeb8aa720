import { writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import type { ExportedConversation, ExportPage } from '../cell/customer-data.js';
import type { ErasureAnswer } from '../cell/customer-erasure.js';
import { adminCall, printJson, type AdminOptions } from './admin-call.js';
import { CliError, ExitCode } from './cli-errors.js';

/**
 * `cellmesh customers export|erase`: everything a cell holds of one customer, as one JSON
 * document, and its erasure across the cluster, through the cell's admin API (docs/desk.md,
 * "Retention, export and erasure"; docs/operations.md).
 */

interface CustomerOptions extends AdminOptions {
  tenant: string;
}

/** Pages one export reads at most: a cursor that never ends would otherwise loop forever. */
const MAX_EXPORT_PAGES = 1_000_000;

export async function runCustomersExportCommand(customer: string, options: CustomerOptions & { out?: string }): Promise<void> {
  const progress = process.stderr.isTTY === true ? (text: string) => process.stderr.write(`\r${text}`) : undefined;
  const document: ExportPage = { tenant: options.tenant, customer, conversations: [] };
  let messages = 0;
  let after: string | undefined;
  for (let pages = 1; ; pages++) {
    const query = after === undefined ? '' : `?after=${encodeURIComponent(after)}`;
    const page = (await adminCall(options, 'GET', `${customerPath(options, customer)}/export${query}`)) as ExportPage;
    for (const conversation of page.conversations) {
      messages += conversation.messages.length;
      addConversation(document.conversations, conversation);
    }
    progress?.(`exported ${document.conversations.length} conversations, ${messages} messages`);
    if (page.next === undefined) break;
    if (pages >= MAX_EXPORT_PAGES) throw new CliError(`the export did not end after ${MAX_EXPORT_PAGES} pages`, ExitCode.Failed);
    after = page.next;
  }
  progress?.('\n');
  const text = `${JSON.stringify(document, null, 2)}\n`;
  if (options.out === undefined) return void process.stdout.write(text);
  // The export is personal data: readable by its owner only.
  await writeFile(options.out, text, { mode: 0o600 }).catch((error: unknown) => {
    throw new CliError(`cannot write ${options.out}: ${error instanceof Error ? error.message : String(error)}`, ExitCode.Failed);
  });
  process.stdout.write(`wrote ${document.conversations.length} conversations, ${messages} messages of ${options.tenant}/${customer} to ${options.out}\n`);
}

export async function runCustomersEraseCommand(customer: string, options: CustomerOptions & { yes?: boolean }): Promise<void> {
  if (options.yes !== true) await confirmErasure(customer, options.tenant);
  const answer = (await adminCall(options, 'DELETE', customerPath(options, customer))) as ErasureAnswer;
  if (options.json === true) printJson(answer);
  else {
    const counts = Object.entries(answer.deleted).map(([name, count]) => `${count} ${wordsOf(name)}`);
    process.stdout.write(`erased ${answer.tenant}/${answer.customer} here: ${counts.join(', ')}; ${answer.devicesClosed} devices closed\n`);
    process.stdout.write(answer.cellsAsked.length === 0 ? 'no other cells asked\n' : `cells asked to erase it too: ${answer.cellsAsked.join(', ')}\n`);
  }
  if (answer.cellsFailed.length > 0) {
    const failed = answer.cellsFailed.map((failure) => `${failure.cell} (${failure.code})`).join(', ');
    throw new CliError(`cells not asked: ${failed}; erase again to ask them`, ExitCode.Failed);
  }
}

/** A page that continues the previous page's last conversation adds to it; any other starts one. */
function addConversation(conversations: ExportedConversation[], conversation: ExportedConversation): void {
  const last = conversations.at(-1);
  if (last === undefined || last.conv !== conversation.conv) return void conversations.push(conversation);
  last.messages.push(...conversation.messages);
  if (conversation.ratings !== undefined) last.ratings = [...(last.ratings ?? []), ...conversation.ratings];
}

/** On a terminal: the operator types the customer's id. Without one: refused, as `--yes` is the only other consent. */
async function confirmErasure(customer: string, tenant: string): Promise<void> {
  if (process.stdin.isTTY !== true) throw new CliError('erasure cannot be undone: pass --yes to erase without a terminal to confirm on', ExitCode.Usage);
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const typed = await prompt.question(`erase everything of customer ${customer} of tenant ${tenant}, in every cell? This cannot be undone. Type the customer's id to confirm: `);
    if (typed.trim() !== customer) throw new CliError('not confirmed: nothing erased', ExitCode.Failed);
  } finally {
    prompt.close();
  }
}

/** `idempotencyRecords` -> `idempotency records`. */
function wordsOf(camelCase: string): string {
  return camelCase.replace(/[A-Z]/g, (letter) => ` ${letter.toLowerCase()}`);
}

function customerPath(options: CustomerOptions, customer: string): string {
  return `/v1/admin/tenants/${encodeURIComponent(options.tenant)}/customers/${encodeURIComponent(customer)}`;
}
