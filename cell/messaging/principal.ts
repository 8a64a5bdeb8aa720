import { parseConversationId, type MessageRole, type Role } from '../protocol/frames.js';

/**
 * Who a user is. A user id alone names nobody: ids are chosen per tenant and per merchant, so
 * customer `alice` and agent `alice` of merchant `bolt-bikes` are different people, and so are
 * the `alice`s of two tenants. Every lookup of a user's devices, delivery and read cursors,
 * sends and receipts goes by the whole principal (docs/protocol.md, "Identity").
 */
export interface Principal {
  readonly tenant: string;
  readonly role: Role;
  readonly user: string;
  /** The merchant an agent works for; absent for customers. */
  readonly merchant?: string | undefined;
}

/** A principal without its tenant: who a user is inside the tenant (store keys are per tenant already). */
export type Party = Omit<Principal, 'tenant'>;

/**
 * The name of a party inside its tenant: `c:<user>` for a customer, `a:<merchant>:<user>` for an
 * agent. Identifiers never contain ':' or '/', so two different parties never share a name, and
 * the name fits in one '/'-separated field of a store key.
 */
export function partyId(party: Party): string {
  if (party.role === 'customer') return `c:${party.user}`;
  if (party.merchant === undefined) throw new Error(`agent ${party.user} has no merchant`);
  return `a:${party.merchant}:${party.user}`;
}

/** The key of a principal across tenants: `<tenant>/<partyId>`. */
export function principalKey(principal: Principal): string {
  return `${principal.tenant}/${partyId(principal)}`;
}

/** The customer of `tenant` called `user`. */
export function customerPrincipal(tenant: string, user: string): Principal {
  return { tenant, role: 'customer', user };
}

/**
 * The party of conversation `conv` that has `role` and id `user` (the sender of a message, the
 * owner of a read cursor): an agent in a conversation works for its merchant.
 */
export function conversationParty(conv: string, role: MessageRole, user: string): string {
  if (role === 'customer') return partyId({ role, user });
  // The desk writes system messages; it never reads, so its party has no read cursor to meet.
  if (role === 'system') return `s:${user}`;
  const merchant = parseConversationId(conv)?.merchant;
  if (merchant === undefined) throw new Error(`'${conv}' is not a conversation id`);
  return partyId({ role, user, merchant });
}

/** The role and user id a party id names; undefined for anything that is not one. */
export function parsePartyId(id: string): Party | undefined {
  if (id.startsWith('c:')) {
    const user = id.slice(2);
    return user.length > 0 && !user.includes(':') ? { role: 'customer', user } : undefined;
  }
  if (!id.startsWith('a:')) return undefined;
  const [merchant, user, ...rest] = id.slice(2).split(':');
  if (merchant === undefined || user === undefined || rest.length > 0 || merchant === '' || user === '') return undefined;
  return { role: 'agent', user, merchant };
}
