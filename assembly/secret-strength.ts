import type { CellConfig } from './config.js';

/** One secret of a config: the path an operator edits, and its value. */
export interface SecretSetting {
  readonly path: string;
  readonly value: string;
}

/** Fewer different characters than this is no secret: `aaaa…`, `passwordpassword…`. */
export const MIN_DISTINCT_SECRET_CHARACTERS = 8;

/** Every secret a cell config holds, by the path that sets it. */
export function secretSettingsOf(config: CellConfig): SecretSetting[] {
  return [
    ...config.tenants.flatMap((tenant, index) => (tenant.secret === undefined ? [] : [{ path: `tenants[${index}].secret`, value: tenant.secret }])),
    ...config.tenants.flatMap((tenant, index) => (tenant.secrets ?? []).map((entry, position) => ({ path: `tenants[${index}].secrets[${position}].secret`, value: entry.secret }))),
    ...(config.mesh === undefined ? [] : [{ path: 'mesh.clusterSecret', value: config.mesh.clusterSecret }]),
    ...(config.mesh?.acceptClusterSecrets ?? []).map((value, index) => ({ path: `mesh.acceptClusterSecrets[${index}]`, value })),
    ...(config.admin.token === undefined ? [] : [{ path: 'admin.token', value: config.admin.token }]),
    ...config.admin.acceptTokens.map((value, index) => ({ path: `admin.acceptTokens[${index}]`, value })),
  ];
}

/**
 * What is wrong with secrets that anyone could guess, one line each naming the setting to
 * change: a value published with the project (the demo's), fewer than
 * MIN_DISTINCT_SECRET_CHARACTERS different characters, or a shorter string repeated. The
 * length rule is the config schema's; this catches what is long enough and still no secret.
 */
export function weakSecretProblems(settings: readonly SecretSetting[], publishedValues: readonly string[]): string[] {
  const problems: string[] = [];
  for (const { path, value } of settings) {
    if (publishedValues.includes(value)) problems.push(`${path} is a published demo value: anyone can use it`);
    else if (new Set(value).size < MIN_DISTINCT_SECRET_CHARACTERS) problems.push(`${path} has fewer than ${MIN_DISTINCT_SECRET_CHARACTERS} different characters`);
    else if (isRepetition(value)) problems.push(`${path} repeats a shorter string`);
  }
  return problems;
}

/** Whether `value` is some shorter string written two or more times (`abcdabcd…`). */
function isRepetition(value: string): boolean {
  return value.length > 1 && `${value}${value}`.indexOf(value, 1) < value.length;
}
