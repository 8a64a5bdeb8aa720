import { MIN_SECRET_BYTES, mintToken } from '../cell/access/tokens.js';
import type { Role } from '../cell/protocol/frames.js';
import { readConfigFile } from './load-config.js';
import { TenantConfig } from '../cell/config.js';
import { CliError, ExitCode } from './cli-errors.js';

interface TokenCommandOptions {
  tenant: string;
  user: string;
  role: Role;
  merchant?: string;
  device: string;
  ttl: number;
  secret?: string;
  config?: string;
}

export async function runTokenCommand(options: TokenCommandOptions): Promise<void> {
  const secret = options.secret ?? (options.config === undefined ? undefined : await secretFromConfig(options.config, options.tenant));
  if (secret === undefined) fail('give the tenant secret with --secret (or CELLMESH_TENANT_SECRET), or a cell config with --config');
  if (options.role === 'agent' && options.merchant === undefined) fail('an agent token needs --merchant');
  if (options.role === 'customer' && options.merchant !== undefined) fail('a customer token takes no --merchant');
  // Checked here to say which setting is wrong; a cell would refuse a shorter secret anyway.
  if (Buffer.byteLength(secret) < MIN_SECRET_BYTES) fail(`the tenant secret must be at least ${MIN_SECRET_BYTES} bytes (the tenant's \`secret\` in the cell config)`);
  const token = await mintToken({
    secret,
    tenant: options.tenant,
    user: options.user,
    role: options.role,
    ...(options.merchant === undefined ? {} : { merchant: options.merchant }),
    device: options.device,
    ttlSeconds: options.ttl,
    nowMs: Date.now(),
  });
  process.stdout.write(`${token}\n`);
}

async function secretFromConfig(path: string, tenantId: string): Promise<string> {
  const raw = await readConfigFile(path);
  const tenants = Array.isArray(raw['tenants']) ? raw['tenants'] : [];
  const tenant = tenants.map((entry) => TenantConfig.safeParse(entry)).find((parsed) => parsed.success && parsed.data.id === tenantId);
  if (tenant?.success !== true) fail(`config ${path} has no valid tenant '${tenantId}'`);
  return tenant.data.secret;
}

function fail(message: string): never {
  throw new CliError(message, ExitCode.Usage);
}
