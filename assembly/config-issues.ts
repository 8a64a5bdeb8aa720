import { z } from 'zod';
import { pathText, type ValueSource } from './config-paths.js';

/**
 * Turns zod's issues about a config into lines an operator can act on: each names the setting
 * by its path (and the flag or variable that set it, if one did), and an unknown key (a typo,
 * usually) comes with the nearest known sibling.
 */
export function configIssueLines(schema: z.ZodType, raw: unknown, issues: readonly z.core.$ZodIssue[], sourceOf: ValueSource = () => undefined): string[] {
  const lines: string[] = [];
  const from = (path: readonly PropertyKey[]): string => {
    const source = sourceOf(path);
    return source === undefined ? '' : `${source}: `;
  };
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const known = knownKeysAt(schema, issue.path, raw);
      for (const key of issue.keys) lines.push(`${from([...issue.path, key])}${unknownKeyLine([...issue.path, key], known)}`);
    } else {
      lines.push(`${from(issue.path)}${pathText(issue.path) || '(root)'}: ${messageOf(issue, raw)}`);
    }
  }
  return lines;
}

/** zod's own words for a value of the wrong type ("Invalid input: expected number, received string"), said for an operator. */
function messageOf(issue: z.core.$ZodIssue, raw: unknown): string {
  if (issue.code !== 'invalid_type' || !issue.message.startsWith('Invalid input:')) return issue.message;
  if (valueAt(raw, issue.path) === undefined) return 'must be set';
  const wanted: Record<string, string> = { number: 'must be a number', int: 'must be an integer', boolean: 'must be true or false', string: 'must be a string', array: 'must be a list', object: 'must be a section of settings' };
  return wanted[issue.expected] ?? issue.message;
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let value = raw;
  for (const segment of path) value = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[segment] : undefined;
  return value;
}

function unknownKeyLine(path: readonly PropertyKey[], known: readonly string[]): string {
  const key = String(path[path.length - 1]);
  const nearest = nearestKey(key, known);
  const sibling = (name: string): string => pathText([...path.slice(0, -1), name]);
  if (nearest !== undefined) return `${pathText(path)} is not a setting; did you mean ${sibling(nearest)}?`;
  return `${pathText(path)} is not a setting; the settings here are ${known.map(sibling).join(', ')}`;
}


/**
 * The known key nearest to `key` by edit distance (a swap of two neighbours counts as one
 * edit), if it is close enough to be a plausible typo: at most a third of the key's length, and
 * at least one edit allowed. Case differences count as edits too (`Port` suggests `port`).
 */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  const allowed = Math.max(1, Math.floor(key.length / 3));
  let best: { name: string; distance: number } | undefined;
  for (const name of known) {
    const distance = editDistance(key.toLowerCase(), name.toLowerCase()) + (key.toLowerCase() === name.toLowerCase() ? 1 : 0);
    if (distance <= allowed && (best === undefined || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent swaps. */
function editDistance(left: string, right: string): number {
  const rows = left.length + 1;
  const columns = right.length + 1;
  const table: number[][] = Array.from({ length: rows }, (_, row) => Array.from({ length: columns }, (_, column) => (row === 0 ? column : column === 0 ? row : 0)));
  for (let row = 1; row < rows; row++) {
    for (let column = 1; column < columns; column++) {
      const cost = left[row - 1] === right[column - 1] ? 0 : 1;
      let distance = Math.min(table[row - 1]![column]! + 1, table[row]![column - 1]! + 1, table[row - 1]![column - 1]! + cost);
      if (row > 1 && column > 1 && left[row - 1] === right[column - 2] && left[row - 2] === right[column - 1]) {
        distance = Math.min(distance, table[row - 2]![column - 2]! + 1);
      }
      table[row]![column] = distance;
    }
  }
  return table[left.length]![right.length]!;
}

/**
 * The keys the schema knows for the object at `path`. A discriminated union (the store's
 * `kind`) is resolved by the discriminator's value in the raw config, so a memory store does
 * not suggest a level store's settings.
 */
function knownKeysAt(schema: z.ZodType, path: readonly PropertyKey[], raw: unknown): string[] {
  let value: unknown = raw;
  let current = unwrapped(schema, value);
  for (const segment of path) {
    if (current instanceof z.ZodObject) current = (current.shape as Record<string, z.ZodType>)[String(segment)] ?? z.never();
    else if (current instanceof z.ZodArray) current = current.element as z.ZodType;
    else return [];
    value = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[segment] : undefined;
    current = unwrapped(current, value);
  }
  return current instanceof z.ZodObject ? Object.keys(current.shape) : [];
}

function unwrapped(schema: z.ZodType, value: unknown): z.ZodType {
  let current = schema;
  for (;;) {
    if (current instanceof z.ZodDefault || current instanceof z.ZodOptional) current = current.unwrap() as z.ZodType;
    else if (current instanceof z.ZodDiscriminatedUnion) {
      const discriminator = current.def.discriminator;
      const chosen = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[discriminator] : undefined;
      const options = current.options as z.ZodType[];
      const option = options.find((candidate) => candidate instanceof z.ZodObject && (candidate.shape as Record<string, z.ZodType>)[discriminator]?.safeParse(chosen).success === true);
      if (option === undefined) return z.never();
      current = option;
    } else return current;
  }
}
