// What a merchant's link says: `/app/?tenant=mall&merchant=acme-shoes&group=pre-sales`, or the
// same in the fragment (`/app/#tenant=…`), which a merchant's site may prefer: a fragment is
// never sent to a server or in a Referer.

export interface ChatLink {
  tenant: string;
  merchant: string;
  /** The desk group a new consultation asks for; the desk's default when absent. */
  group: string | undefined;
}

/** Names as the cell accepts them (1-64 of [A-Za-z0-9_.-]). */
const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** The link's tenant, merchant and group, or the reason it is not usable. */
export function parseChatLink(location: { search: string; hash: string }): ChatLink | { error: string } {
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ''));
  const read = (name: string): string | undefined => query.get(name) ?? fragment.get(name) ?? undefined;
  const tenant = read('tenant');
  const merchant = read('merchant');
  const group = read('group');
  if (tenant === undefined || merchant === undefined) return { error: 'This chat link names no shop: it needs a tenant and a merchant.' };
  for (const [what, value] of [['tenant', tenant], ['merchant', merchant], ['group', group]] as const) {
    if (value !== undefined && !NAME.test(value)) return { error: `This chat link's ${what} is not valid.` };
  }
  return { tenant, merchant, group };
}
