import { MIN_SECRET_BYTES, mintToken, signingKeysOf, type SigningKey } from '../cell/access/tokens.js';
import type { Role } from '../cell/protocol/frames.js';
import { TenantConfig } from '../cell/settings.js';
import { CliError, ExitCode } from './cli-errors.js';

interface TokenCommandOptions {
  tenant: string;
  user: string;
  role: Role;
  merchant?: string;
  device: string;
  ttl: number;
  secret?: string;
  /** The kid of the secret to sign with: written in the token header (and, with --config, picks the secret). */
  kid?: string;
  config?: string;
}

export async function runTokenCommand(options: TokenCommandOptions): Promise<void> {
  const key: SigningKey | undefined =
    options.secret !== undefined
      ? { secret: options.secret, ...(options.kid === undefined ? {} : { kid: options.kid }) }
      : options.config === undefined
        ? undefined
        : await keyFromConfig(options.config, options.tenant, options.kid);
  if (key === undefined) fail('give the tenant secret with --secret (or CELLMESH_TENANT_SECRET), or a cell config with --config');
  if (options.role === 'agent' && options.merchant === undefined) fail('an agent token needs --merchant');
  if (options.role === 'customer' && options.merchant !== undefined) fail('a customer token takes no --merchant');
  // Checked here to say which setting is wrong; a cell would refuse a shorter secret anyway.
  if (Buffer.byteLength(key.secret) < MIN_SECRET_BYTES) fail(`the tenant secret must be at least ${MIN_SECRET_BYTES} bytes (the tenant's \`secret\` in the cell config)`);
  const token = await mintToken({
    secret: key.secret,
    ...(key.kid === undefined ? {} : { kid: key.kid }),
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

/** The tenant's secret of `kid`, or without one its first (its only `secret`, or the first of `secrets`). */
async function keyFromConfig(path: string, tenantId: string, kid: string | undefined): Promise<SigningKey> {
  // Loaded only with --config: it brings the YAML parser and the whole cell config schema.
  const { readConfigFile } = await import('./load-config.js');
  const raw = await readConfigFile(path);
  const tenants = Array.isArray(raw['tenants']) ? raw['tenants'] : [];
  const tenant = tenants.map((entry) => TenantConfig.safeParse(entry)).find((parsed) => parsed.success && parsed.data.id === tenantId);
  if (tenant?.success !== true) fail(`config ${path} has no valid tenant '${tenantId}'`);
  const keys = signingKeysOf(tenant.data);
  const key = kid === undefined ? keys[0] : keys.find((candidate) => candidate.kid === kid);
  if (key === undefined) {
    const kids = keys.flatMap((candidate) => (candidate.kid === undefined ? [] : [candidate.kid]));
    fail(`tenant '${tenantId}' of ${path} has no secret with kid '${kid ?? ''}' (${kids.length === 0 ? 'it has a single secret without kid' : `its kids: ${kids.join(', ')}`})`);
  }
  return key;
}

function fail(message: string): never {
  throw new CliError(message, ExitCode.Usage);
}
