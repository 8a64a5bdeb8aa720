import type { Identity } from '../access/tokens.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import type { DeviceInfo, PresenceFrame, ServerFrame } from '../protocol/frames.js';
import type { DeviceConnection } from './device.js';
import { customerPrincipal, principalKey, type Principal } from './principal.js';

/** A `presence` answer without its frame fields. */
export type PresenceAnswer = Omit<Extract<ServerFrame, { t: 'presence' }>, 't' | 'id'>;

/**
 * Which users are online in this cell and on which devices; also the fan-out index: a
 * conversation reaches its customer's devices and the devices of its merchant's agents.
 * Users are keyed by their whole principal (principal.ts), never by user id alone: customer
 * `alice` and agent `alice` of some merchant are different users with different devices.
 */
export class PresenceRegistry {
  /** By principalKey, then by device. */
  private readonly devicesByUser = new Map<string, Map<string, DeviceConnection>>();
  private readonly agentsByMerchant = new Map<string, Set<DeviceConnection>>();
  private count = 0;

  get connections(): number {
    return this.count;
  }

  /** Registers a device; returns the connection it replaces (same principal and device), if any. */
  add(connection: DeviceConnection): DeviceConnection | undefined {
    const { tenant, device, merchant } = connection.identity;
    const userKey = principalKey(connection.identity);
    // Removing first: it may drop the user's (then empty) device map.
    const replaced = this.devicesByUser.get(userKey)?.get(device);
    if (replaced !== undefined) this.remove(replaced);
    let devices = this.devicesByUser.get(userKey);
    if (devices === undefined) {
      devices = new Map();
      this.devicesByUser.set(userKey, devices);
    }
    devices.set(device, connection);
    if (merchant !== undefined) {
      const merchantKey = `${tenant}/${merchant}`;
      let agents = this.agentsByMerchant.get(merchantKey);
      if (agents === undefined) {
        agents = new Set();
        this.agentsByMerchant.set(merchantKey, agents);
      }
      agents.add(connection);
    }
    this.count++;
    return replaced;
  }

  /** Unregisters a device; a no-op when a newer connection of the same device took its place. */
  remove(connection: DeviceConnection): boolean {
    const { tenant, device, merchant } = connection.identity;
    const userKey = principalKey(connection.identity);
    const devices = this.devicesByUser.get(userKey);
    if (devices?.get(device) !== connection) return false;
    devices.delete(device);
    if (devices.size === 0) this.devicesByUser.delete(userKey);
    if (merchant !== undefined) {
      const merchantKey = `${tenant}/${merchant}`;
      const agents = this.agentsByMerchant.get(merchantKey);
      agents?.delete(connection);
      if (agents?.size === 0) this.agentsByMerchant.delete(merchantKey);
    }
    this.count--;
    return true;
  }

  devicesOf(principal: Principal): Iterable<DeviceConnection> {
    return this.devicesByUser.get(principalKey(principal))?.values() ?? [];
  }

  deviceCount(principal: Principal): number {
    return this.devicesByUser.get(principalKey(principal))?.size ?? 0;
  }

  hasDevice(principal: Principal, device: string): boolean {
    return this.devicesByUser.get(principalKey(principal))?.has(device) ?? false;
  }

  agentsOf(tenant: string, merchant: string): Iterable<DeviceConnection> {
    return this.agentsByMerchant.get(`${tenant}/${merchant}`) ?? [];
  }

  /**
   * Every device that should see a conversation's traffic: its customer's, and its merchant's
   * agents'. An array, not a generator: it is asked once per message, and a generator costs an
   * object per device on top of its own.
   */
  participantsOf(tenant: string, merchant: string, customer: string): DeviceConnection[] {
    const participants: DeviceConnection[] = [];
    const customerDevices = this.devicesByUser.get(principalKey(customerPrincipal(tenant, customer)));
    if (customerDevices !== undefined) for (const device of customerDevices.values()) participants.push(device);
    const agents = this.agentsByMerchant.get(`${tenant}/${merchant}`);
    if (agents !== undefined) for (const agent of agents) participants.push(agent);
    return participants;
  }

  deviceInfo(principal: Principal): DeviceInfo[] {
    return [...this.devicesOf(principal)].map((connection) => ({
      device: connection.identity.device,
      sinceMs: connection.connectedAtMs,
    }));
  }

  all(): Iterable<DeviceConnection> {
    const everyone: DeviceConnection[] = [];
    for (const devices of this.devicesByUser.values()) everyone.push(...devices.values());
    return everyone;
  }

  /**
   * An id in `users` names the tenant's customer of that id and, when an agent asks, also the
   * agent of that id of the asker's own merchant (listed only when online): never another
   * merchant's agent, whose id may be the same. Customers may ask only about themselves.
   */
  answer(identity: Identity, frame: Pick<PresenceFrame, 'users' | 'merchants'>): PresenceAnswer {
    const users: PresenceAnswer['users'] = [];
    for (const user of frame.users ?? []) {
      if (identity.role === 'customer' && user !== identity.user) {
        throw new CellError(ErrorCode.ConversationForbidden, 'customers may only ask for their own devices');
      }
      users.push({ user, role: 'customer', devices: this.deviceInfo(customerPrincipal(identity.tenant, user)) });
      if (identity.role !== 'agent') continue;
      const colleague = this.deviceInfo({ tenant: identity.tenant, role: 'agent', user, merchant: identity.merchant });
      if (colleague.length > 0) users.push({ user, role: 'agent', devices: colleague });
    }
    const merchants = (frame.merchants ?? []).map((merchant) => ({
      merchant,
      agentsOnline: new Set([...this.agentsOf(identity.tenant, merchant)].map((device) => device.identity.user)).size,
    }));
    return { users, merchants };
  }
}
