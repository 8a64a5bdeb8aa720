/**
 * `init` over `defaults`: every field `init` leaves out, or sets to undefined, takes its default
 * (a plain spread would copy an explicit undefined over the default).
 */
export function withDefaults<T extends object>(defaults: Required<T>, init: T): Required<T> {
  const settings: Record<string, unknown> = { ...defaults };
  for (const [key, value] of Object.entries(init)) if (value !== undefined) settings[key] = value;
  return settings as Required<T>;
}
