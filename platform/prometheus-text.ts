/** Reading the Prometheus text exposition (`/v1/metrics`), for the tests and the benchmarks that observe cells from outside. */

/**
 * The value of one sample in a Prometheus text exposition: `name` with exactly `labels`
 * (order-insensitive); undefined when absent.
 */
export function metricValue(text: string, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  const wanted = Object.entries(labels)
    .map(([key, value]) => `${key}="${value}"`)
    .sort()
    .join(',');
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const match = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (match === null || match[1] !== name) continue;
    const have = (match[2] ?? '')
      .split(/,(?=[A-Za-z_])/)
      .filter((part) => part !== '')
      .sort()
      .join(',');
    if (have === wanted) return Number(match[3]);
  }
  return undefined;
}

interface Family {
  type: string | undefined;
  helps: number;
  types: number;
  samples: number;
}

const NAME = /^[a-z_][a-z0-9_]*$/;
const SAMPLE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
/** Units that are not base units, or abbreviations, as whole name components (Prometheus: seconds, bytes, ratios); not `min`, which names a minimum. */
const NON_BASE_UNITS = new Set([
  'milliseconds', 'microseconds', 'nanoseconds', 'minutes', 'hours', 'days', 'weeks',
  'kilobytes', 'megabytes', 'gigabytes', 'kibibytes', 'mebibytes', 'gibibytes', 'bits', 'percent',
  'ms', 'us', 'ns', 'sec', 'secs', 'kb', 'mb', 'gb', 'tb', 'pb',
]);
const TYPE_WORDS = new Set(['counter', 'gauge', 'histogram', 'summary']);
const SUFFIXES: Readonly<Record<string, readonly string[]>> = { histogram: ['_bucket', '_sum', '_count'], summary: ['', '_sum', '_count'] };

/**
 * The breaches of Prometheus' naming and exposition rules in `text` (what `promtool check metrics`
 * lints, and what our docs promise): one HELP and one TYPE per family before its samples;
 * snake_case names and labels; counters end in `_total` and nothing else does; histogram and
 * summary series carry their own suffixes and labels; base units only; no type in a name; no
 * sample twice. Empty when the exposition is clean.
 */
export function namingProblems(text: string): string[] {
  const problems: string[] = [];
  const families = new Map<string, Family>();
  const familyOf = (name: string): Family => {
    let family = families.get(name);
    if (family === undefined) {
      family = { type: undefined, helps: 0, types: 0, samples: 0 };
      families.set(name, family);
    }
    return family;
  };
  const seenSamples = new Set<string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const comment = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (comment !== null) {
      const [, kind, name = '', rest = ''] = comment;
      const family = familyOf(name);
      if (kind === 'HELP') {
        family.helps++;
        if (rest.trim() === '') problems.push(`${name}: empty HELP`);
      } else {
        family.types++;
        family.type = rest.trim();
        if (family.samples > 0) problems.push(`${name}: TYPE after its samples`);
      }
      continue;
    }
    if (line.startsWith('#')) continue;
    const sample = SAMPLE.exec(line);
    if (sample === null) {
      problems.push(`unparsable line: ${line}`);
      continue;
    }
    const [, sampleName = '', labelText = ''] = sample;
    const labels = [...labelText.matchAll(LABEL)].map((match) => match[1] ?? '');
    const family = familyOfSample(sampleName, families);
    if (family === undefined) {
      problems.push(`${sampleName}: sample of no declared family`);
      continue;
    }
    family.entry.samples++;
    const key = `${sampleName}{${[...labelText.matchAll(LABEL)].map((match) => match[0]).sort().join(',')}}`;
    if (seenSamples.has(key)) problems.push(`${key}: sample given twice`);
    seenSamples.add(key);
    for (const label of labels) {
      if (!NAME.test(label) || label.startsWith('__')) problems.push(`${sampleName}: label '${label}' is not snake_case or is reserved`);
    }
    const suffix = sampleName.slice(family.name.length);
    if (family.entry.type === 'histogram' && suffix === '_bucket' && !labels.includes('le')) problems.push(`${sampleName}: bucket without 'le'`);
    if (family.entry.type !== 'histogram' && labels.includes('le')) problems.push(`${sampleName}: 'le' outside a histogram bucket`);
    if (family.entry.type !== 'summary' && labels.includes('quantile')) problems.push(`${sampleName}: 'quantile' outside a summary`);
  }
  for (const [name, family] of families) {
    if (family.types !== 1) problems.push(`${name}: ${family.types} TYPE lines`);
    if (family.helps !== 1) problems.push(`${name}: ${family.helps} HELP lines`);
    if (family.samples === 0) continue;
    if (!NAME.test(name)) problems.push(`${name}: not a snake_case name (colons are for recording rules)`);
    if (family.type === 'counter' && !name.endsWith('_total')) problems.push(`${name}: a counter whose name does not end in _total`);
    if (family.type !== 'counter' && name.endsWith('_total')) problems.push(`${name}: a ${family.type} whose name ends in _total`);
    if ((family.type === 'histogram' || family.type === 'summary') && /_(bucket|sum|count)$/.test(name)) problems.push(`${name}: a ${family.type} named with a reserved suffix`);
    const words = name.split('_');
    for (const word of words) {
      if (NON_BASE_UNITS.has(word)) problems.push(`${name}: '${word}' is not a base unit (use seconds, bytes, ratios)`);
      if (TYPE_WORDS.has(word)) problems.push(`${name}: names its metric type '${word}'`);
    }
  }
  return problems;
}

/** The family a sample belongs to: its own name, or a histogram's or summary's with the suffix off. */
function familyOfSample(sampleName: string, families: ReadonlyMap<string, Family>): { name: string; entry: Family } | undefined {
  const own = families.get(sampleName);
  if (own !== undefined && own.type !== 'histogram') return { name: sampleName, entry: own };
  for (const [type, suffixes] of Object.entries(SUFFIXES)) {
    for (const suffix of suffixes) {
      if (suffix === '' || !sampleName.endsWith(suffix)) continue;
      const name = sampleName.slice(0, -suffix.length);
      const entry = families.get(name);
      if (entry?.type === type) return { name, entry };
    }
  }
  return undefined;
}
