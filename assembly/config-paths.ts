/**
 * How config settings are named in messages, kept apart from the schema (and from zod) so that
 * the CLI's entry point can build its options without loading the validation library.
 */

/**
 * Where the value at a config path came from when not from the file: a flag or an environment
 * variable, as the operator wrote it (`CELLMESH_PORT=abc`), so the error names what to fix.
 */

export type ValueSource = (path: readonly PropertyKey[]) => string | undefined;

/** `tenants[0].secret` style: array indexes in brackets, keys joined by dots. */
export function pathText(path: readonly PropertyKey[]): string {
  return path.map((segment, index) => (typeof segment === 'number' ? `[${segment}]` : `${index === 0 ? '' : '.'}${String(segment)}`)).join('');
}
