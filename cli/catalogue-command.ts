import { adminCall, printJson, type AdminOptions } from './admin-call.js';
import { CliError, ExitCode } from './cli-errors.js';
import { readPassword } from './password-input.js';

/**
 * `cellmesh tenants list|create|update|remove` and `cellmesh merchants list|create|update|remove`:
 * the tenants a cell serves and the merchants it hosts, through its admin API (docs/protocol.md,
 * "HTTP API"; docs/operations.md). A secret the cell generates is printed once, on create (or
 * on `--add-secret`); one of the operator's own is read from standard input, never from the
 * command line, where `ps` and the shell history would keep it.
 */

interface TenantFieldOptions extends AdminOptions {
  name?: string;
  origins?: string;
  kid?: string;
  secretStdin?: boolean;
  conversationDays?: number;
  attachmentDays?: number;
  attachmentMaxBytes?: number;
  attachmentTypes?: string;
}

interface TenantUpdateOptions extends TenantFieldOptions {
  addSecret?: string;
  removeSecret?: string;
}

interface MerchantOptions extends AdminOptions {
  tenant: string;
  name?: string;
}

interface MerchantView {
  id: string;
  name?: string;
  source: string;
  agents?: number;
}

interface TenantView {
  id: string;
  name?: string;
  source: string;
  origins: string[];
  kids: string[];
  attachments?: { maxBytes: number; types: string[] };
  retention?: { conversationDays?: number; attachmentsDays?: number };
  merchants: MerchantView[];
}

interface IssuedSecret {
  kid: string;
  secret: string;
}

export async function runTenantsListCommand(options: AdminOptions): Promise<void> {
  const body = (await adminCall(options, 'GET', '/v1/admin/tenants')) as { tenants: TenantView[] };
  if (options.json === true) return printJson(body);
  for (const tenant of body.tenants) process.stdout.write(`${tenantLine(tenant)}\n`);
}

export async function runTenantsCreateCommand(id: string, options: TenantFieldOptions): Promise<void> {
  const secret = options.secretStdin === true ? await readPassword(true, 'secret') : undefined;
  const fields = tenantFields(options, undefined);
  const body = (await adminCall(options, 'POST', '/v1/admin/tenants', { id, ...fields, ...(options.kid === undefined ? {} : { kid: options.kid }), ...(secret === undefined ? {} : { secret }) })) as {
    tenant: TenantView;
    secret?: IssuedSecret;
  };
  if (options.json === true) return printJson(body);
  process.stdout.write(`created ${tenantLine(body.tenant)}\n`);
  if (body.secret !== undefined) printIssued(body.secret);
}

export async function runTenantsUpdateCommand(id: string, options: TenantUpdateOptions): Promise<void> {
  const path = `/v1/admin/tenants/${encodeURIComponent(id)}`;
  // Settings are sent whole: what the flags leave out is kept as it is now.
  const current = hasSettings(options) ? ((await adminCall(options, 'GET', path)) as TenantView) : undefined;
  const fields = tenantFields(options, current);
  if (options.addSecret !== undefined) {
    const secret = options.secretStdin === true ? await readPassword(true, 'secret') : undefined;
    fields['addSecret'] = { kid: options.addSecret, ...(secret === undefined ? {} : { secret }) };
  } else if (options.secretStdin === true) {
    throw new CliError('--secret-stdin goes with --add-secret <kid>', ExitCode.Usage);
  }
  if (options.removeSecret !== undefined) fields['removeSecret'] = options.removeSecret;
  if (Object.keys(fields).length === 0) {
    throw new CliError('give at least one of --name, --origins, --conversation-days, --attachment-days, --attachment-max-bytes, --attachment-types, --add-secret, --remove-secret', ExitCode.Usage);
  }
  const body = (await adminCall(options, 'PATCH', path, fields)) as { tenant: TenantView; secret?: IssuedSecret };
  if (options.json === true) return printJson(body);
  process.stdout.write(`updated ${tenantLine(body.tenant)}\n`);
  if (body.secret !== undefined) printIssued(body.secret);
}

export async function runTenantsRemoveCommand(id: string, options: AdminOptions): Promise<void> {
  const body = (await adminCall(options, 'DELETE', `/v1/admin/tenants/${encodeURIComponent(id)}`)) as { removed: TenantView };
  if (options.json === true) return printJson(body);
  process.stdout.write(`removed tenant ${body.removed.id}\n`);
}

export async function runMerchantsListCommand(options: MerchantOptions): Promise<void> {
  const body = (await adminCall(options, 'GET', merchantsPath(options))) as { merchants: MerchantView[] };
  if (options.json === true) return printJson(body);
  if (body.merchants.length === 0) return void process.stdout.write(`tenant ${options.tenant} has no merchants on this cell\n`);
  for (const merchant of body.merchants) process.stdout.write(`${merchantLine(merchant)}\n`);
}

export async function runMerchantsCreateCommand(id: string, options: MerchantOptions): Promise<void> {
  const merchant = (await adminCall(options, 'POST', merchantsPath(options), { id, ...(options.name === undefined ? {} : { name: options.name }) })) as MerchantView;
  if (options.json === true) return printJson(merchant);
  process.stdout.write(`created ${merchantLine(merchant)} of tenant ${options.tenant}, hosted by this cell\n`);
}

export async function runMerchantsUpdateCommand(id: string, options: MerchantOptions): Promise<void> {
  if (options.name === undefined) throw new CliError('give --name', ExitCode.Usage);
  const merchant = (await adminCall(options, 'PATCH', `${merchantsPath(options)}/${encodeURIComponent(id)}`, { name: options.name })) as MerchantView;
  if (options.json === true) return printJson(merchant);
  process.stdout.write(`updated ${merchantLine(merchant)}\n`);
}

export async function runMerchantsRemoveCommand(id: string, options: MerchantOptions): Promise<void> {
  const body = (await adminCall(options, 'DELETE', `${merchantsPath(options)}/${encodeURIComponent(id)}`)) as { removed: MerchantView };
  if (options.json === true) return printJson(body);
  process.stdout.write(`removed merchant ${body.removed.id} of tenant ${options.tenant}\n`);
}

function merchantsPath(options: MerchantOptions): string {
  return `/v1/admin/tenants/${encodeURIComponent(options.tenant)}/merchants`;
}

function hasSettings(options: TenantFieldOptions): boolean {
  return [options.conversationDays, options.attachmentDays, options.attachmentMaxBytes, options.attachmentTypes].some((value) => value !== undefined);
}

/** The body fields the flags set; settings merged over `current` (an update) or the defaults (a create). */
function tenantFields(options: TenantFieldOptions, current: TenantView | undefined): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (options.name !== undefined) fields['name'] = options.name;
  if (options.origins !== undefined) fields['origins'] = listOf(options.origins);
  if (options.conversationDays !== undefined || options.attachmentDays !== undefined) {
    fields['retention'] = {
      ...current?.retention,
      ...(options.conversationDays === undefined ? {} : { conversationDays: options.conversationDays }),
      ...(options.attachmentDays === undefined ? {} : { attachmentsDays: options.attachmentDays }),
    };
  }
  if (options.attachmentMaxBytes !== undefined || options.attachmentTypes !== undefined) {
    fields['attachments'] = {
      ...current?.attachments,
      ...(options.attachmentMaxBytes === undefined ? {} : { maxBytes: options.attachmentMaxBytes }),
      ...(options.attachmentTypes === undefined ? {} : { types: listOf(options.attachmentTypes) }),
    };
  }
  return fields;
}

function listOf(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

function printIssued(secret: IssuedSecret): void {
  process.stdout.write(`secret ${secret.kid}: ${secret.secret}\n`);
  process.stderr.write('keep this secret on the merchant\'s server (it signs the tokens of the tenant\'s users); the cell shows it only this once\n');
}

function tenantLine(tenant: TenantView): string {
  const merchants = tenant.merchants.map((merchant) => merchant.id).join(',') || '-';
  const origins = tenant.origins.join(',') || '-';
  return `${tenant.id}${tenant.name === undefined ? '' : `  "${tenant.name}"`}  ${tenant.source}  origins ${origins}  kids ${tenant.kids.join(',') || '-'}  merchants ${merchants}`;
}

function merchantLine(merchant: MerchantView): string {
  const agents = merchant.agents === undefined ? '' : `  agents ${merchant.agents}`;
  return `${merchant.id}${merchant.name === undefined ? '' : `  "${merchant.name}"`}  ${merchant.source}${agents}`;
}
