import { z } from 'zod';
import type { Clock } from '../../platform/clock.js';
import type { Store, StoreOp } from '../../platform/store/store.js';
import { parseWith } from '../access/http-router.js';
import { MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, hashPassword } from '../access/passwords.js';
import { KeyedSerializer } from '../messaging/keyed-serializer.js';
import { keys } from '../messaging/keys.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { AGENT_LIMITS, identifier, type AgentSeedConfig } from '../settings.js';

/**
 * The people of each merchant's desk: its agents, with their capacity, groups and supervisor
 * flag, persisted through the store under the merchant's desk range (keys.merchantDeskTable(...,
 * 'agent'), one JSON value per agent), so they travel with the merchant when it moves.
 *
 * Everything is read into memory at start (`load`); lookups are synchronous after that. Every
 * change is durable before it is visible and before the listeners hear of it, and changes of one
 * merchant run one at a time, so a check (does the agent exist?) and its write never interleave
 * with another change of that merchant.
 */

/** An agent as stored. `passwordHash` is for logins only: no API returns it (see `agentView`). */
export interface AgentRecord {
  id: string;
  name: string;
  /** Consultations the agent handles at once. */
  capacity: number;
  groups: string[];
  /** Supervisors watch every consultation of their merchant. */
  supervisor: boolean;
  /** scrypt hash (cell/access/passwords.ts), set through `setPassword`. */
  passwordHash?: string | undefined;
  createdAtMs: number;
  updatedAtMs: number;
}

/** What the admin API shows of an agent: everything but the password hash. */
export type AgentView = Omit<AgentRecord, 'passwordHash'> & { hasPassword: boolean };

export interface AgentChange {
  tenant: string;
  merchant: string;
  agentId: string;
  /** Undefined when the agent was created. */
  before: AgentRecord | undefined;
  /** Undefined when the agent was removed. */
  after: AgentRecord | undefined;
}

/** Hears every change made through the directory, after it is durable. Must not throw. */
export type AgentChangeListener = (change: AgentChange) => void;

/** A merchant whose people `load` reads, with the agents its config seeds. */
export interface MerchantPeople {
  tenant: string;
  merchant: string;
  seeds?: readonly AgentSeedConfig[] | undefined;
}

export const DEFAULT_AGENT_CAPACITY = 5;
export const DEFAULT_AGENT_GROUPS: readonly string[] = ['default'];
/** Changes of all merchants that may wait at once; beyond, a change is refused (a stalled store). */
const MAX_PENDING_CHANGES = 10_000;
/** Agent records read per store page. */
const PAGE_ENTRIES = 1000;

const name = z.string().trim().min(1, 'must not be empty').max(AGENT_LIMITS.nameChars, `must be at most ${AGENT_LIMITS.nameChars} characters`);
const capacity = z.number().int('must be an integer').min(1, 'must be at least 1').max(AGENT_LIMITS.capacity, `must be at most ${AGENT_LIMITS.capacity}`);
const groups = z
  .array(identifier)
  .min(1, 'needs at least one group')
  .max(AGENT_LIMITS.groups, `holds at most ${AGENT_LIMITS.groups} groups`)
  .refine((list) => new Set(list).size === list.length, 'lists a group twice');

/** A new agent: only the id is required. */
export const NewAgent = z.strictObject({ id: identifier, name: name.optional(), capacity: capacity.optional(), groups: groups.optional(), supervisor: z.boolean().optional() });
/** A change of an agent: any of these fields, at least one. */
export const AgentPatch = z
  .strictObject({ name: name.optional(), capacity: capacity.optional(), groups: groups.optional(), supervisor: z.boolean().optional() })
  .refine((patch) => Object.values(patch).some((value) => value !== undefined), 'give at least one of name, capacity, groups, supervisor');
export const NewPassword = z
  .string()
  .min(MIN_PASSWORD_CHARS, `must be at least ${MIN_PASSWORD_CHARS} characters`)
  .max(MAX_PASSWORD_CHARS, `must be at most ${MAX_PASSWORD_CHARS} characters`);

export type NewAgent = z.infer<typeof NewAgent>;
export type AgentPatch = z.infer<typeof AgentPatch>;

export function agentView(record: AgentRecord): AgentView {
  const { passwordHash, ...view } = record;
  return { ...view, groups: [...view.groups], hasPassword: passwordHash !== undefined };
}

export class PeopleDirectory {
  /** Agents by id, by merchant (`<tenant>/<merchant>`); a merchant is here once loaded. */
  private readonly merchants = new Map<string, Map<string, AgentRecord>>();
  private readonly listeners = new Set<AgentChangeListener>();
  private readonly changes = new KeyedSerializer(MAX_PENDING_CHANGES);

  constructor(private readonly components: { store: Store; clock: Clock }) {}

  /**
   * Reads the agents of these merchants (the ones this cell hosts) and creates the seeded agents
   * a merchant never had. A seed is applied once: a marker (table `agent-seeded`) remembers it,
   * so an agent the admin API removed is not brought back at the next start.
   */
  async load(merchants: readonly MerchantPeople[]): Promise<void> {
    for (const { tenant, merchant, seeds } of merchants) {
      await this.changes.run(merchantKey(tenant, merchant), async () => {
        const agents = await this.readAgents(tenant, merchant);
        await this.applySeeds(tenant, merchant, agents, seeds ?? []);
        this.merchants.set(merchantKey(tenant, merchant), agents);
      });
    }
  }

  /** Whether the merchant's people are here (loaded, or moved in). */
  hasMerchant(tenant: string, merchant: string): boolean {
    return this.merchants.has(merchantKey(tenant, merchant));
  }

  /** The merchant's agents, by id; empty for a merchant that is not here. */
  list(tenant: string, merchant: string): AgentRecord[] {
    const agents = this.merchants.get(merchantKey(tenant, merchant));
    return agents === undefined ? [] : [...agents.values()].sort((left, right) => (left.id < right.id ? -1 : left.id > right.id ? 1 : 0));
  }

  get(tenant: string, merchant: string, agent: string): AgentRecord | undefined {
    return this.merchants.get(merchantKey(tenant, merchant))?.get(agent);
  }

  /** Creates an agent (AGENT_EXISTS if the id is taken); defaults: name = id, DEFAULT_AGENT_CAPACITY, DEFAULT_AGENT_GROUPS. */
  async create(tenant: string, merchant: string, input: unknown): Promise<AgentRecord> {
    const fields = parseWith(NewAgent, input);
    return this.change(tenant, merchant, fields.id, (before) => {
      if (before !== undefined) throw new CellError(ErrorCode.AgentExists, `merchant ${merchant} has an agent ${fields.id} already`);
      return newRecord(fields, this.components.clock.now());
    });
  }

  /** Changes any of name, capacity, groups, supervisor (AGENT_UNKNOWN if there is no such agent). */
  async update(tenant: string, merchant: string, agent: string, input: unknown): Promise<AgentRecord> {
    const patch = parseWith(AgentPatch, input);
    return this.change(tenant, merchant, agent, (before) => {
      const existing = requireAgent(before, merchant, agent);
      return { ...existing, ...definedFields(patch), updatedAtMs: this.components.clock.now() };
    });
  }

  /** Removes an agent; resolves with what it was. */
  async remove(tenant: string, merchant: string, agent: string): Promise<AgentRecord> {
    let removed: AgentRecord | undefined;
    await this.change(tenant, merchant, agent, (before) => {
      removed = requireAgent(before, merchant, agent);
      return undefined;
    });
    return removed!;
  }

  /** Sets the agent's login password (stored as a scrypt hash); BAD_FRAME for a length out of bounds. */
  async setPassword(tenant: string, merchant: string, agent: string, password: unknown): Promise<AgentRecord> {
    const checked = parseWith(z.strictObject({ password: NewPassword }), { password }).password;
    requireAgent(this.get(tenant, merchant, agent), merchant, agent);
    // Hashed outside the merchant's lane: scrypt takes tens of ms and must not hold up other changes.
    const passwordHash = await hashPassword(checked);
    return this.change(tenant, merchant, agent, (before) => ({ ...requireAgent(before, merchant, agent), passwordHash, updatedAtMs: this.components.clock.now() }));
  }

  /**
   * A merchant moved in: the move copied its desk keys into the store; read its agents again.
   * No change events: the desk of a merchant that moves in is built from `list`.
   */
  reloadMerchant(tenant: string, merchant: string): Promise<void> {
    return this.changes.run(merchantKey(tenant, merchant), async () => {
      this.merchants.set(merchantKey(tenant, merchant), await this.readAgents(tenant, merchant));
    });
  }

  /** A merchant moved out: its people are no longer here. No change events (its desk left with it). */
  forgetMerchant(tenant: string, merchant: string): void {
    this.merchants.delete(merchantKey(tenant, merchant));
  }

  /** Registers a listener of changes; returns its removal. */
  onChange(listener: AgentChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * One change of one agent, in the merchant's lane: `decide` sees the agent as it is and returns
   * what it becomes (undefined: removed); the write is durable before memory and listeners see it.
   */
  private change<After extends AgentRecord | undefined>(tenant: string, merchant: string, agentId: string, decide: (before: AgentRecord | undefined) => After): Promise<After> {
    const merchantId = merchantKey(tenant, merchant);
    return this.changes.run(merchantId, async () => {
      const agents = this.merchants.get(merchantId);
      if (agents === undefined) throw new CellError(ErrorCode.MerchantNotHosted, `merchant ${merchant} of tenant ${tenant} is not hosted by this cell`);
      const before = agents.get(agentId);
      const after = decide(before);
      const key = agentKey(tenant, merchant, agentId);
      await this.components.store.write([after === undefined ? { type: 'del', key } : { type: 'put', key, value: JSON.stringify(after) }]);
      if (after === undefined) agents.delete(agentId);
      else agents.set(agentId, after);
      for (const listener of this.listeners) listener({ tenant, merchant, agentId, before, after });
      return after;
    });
  }

  private async readAgents(tenant: string, merchant: string): Promise<Map<string, AgentRecord>> {
    const agents = new Map<string, AgentRecord>();
    const range = keys.merchantDeskTable(tenant, merchant, 'agent');
    let gte = range.gte;
    for (;;) {
      const page = await this.components.store.range({ gte, lt: range.lt, limit: PAGE_ENTRIES });
      for (const [, value] of page) {
        const record = JSON.parse(value) as AgentRecord;
        agents.set(record.id, record);
      }
      if (page.length < PAGE_ENTRIES) return agents;
      gte = `${page[page.length - 1]![0]}\x00`;
    }
  }

  private async applySeeds(tenant: string, merchant: string, agents: Map<string, AgentRecord>, seeds: readonly AgentSeedConfig[]): Promise<void> {
    if (seeds.length === 0) return;
    const markerPrefix = keys.merchantDeskTable(tenant, merchant, 'agent-seeded').gte;
    const markers = await this.components.store.getMany(seeds.map((seed) => markerPrefix + seed.id));
    const nowMs = this.components.clock.now();
    const ops: StoreOp[] = [];
    const created: AgentRecord[] = [];
    seeds.forEach((seed, index) => {
      if (markers[index] !== undefined) return;
      ops.push({ type: 'put', key: markerPrefix + seed.id, value: JSON.stringify({ seededAtMs: nowMs }) });
      // An agent already there (created through the API before the seed was added) keeps its fields.
      if (agents.has(seed.id)) return;
      const record = newRecord(seed, nowMs);
      ops.push({ type: 'put', key: agentKey(tenant, merchant, seed.id), value: JSON.stringify(record) });
      created.push(record);
    });
    if (ops.length > 0) await this.components.store.write(ops);
    for (const record of created) agents.set(record.id, record);
  }
}

function merchantKey(tenant: string, merchant: string): string {
  return `${tenant}/${merchant}`;
}

function agentKey(tenant: string, merchant: string, agent: string): string {
  return keys.merchantDeskTable(tenant, merchant, 'agent').gte + agent;
}

function newRecord(fields: NewAgent, nowMs: number): AgentRecord {
  return {
    id: fields.id,
    name: fields.name ?? fields.id,
    capacity: fields.capacity ?? DEFAULT_AGENT_CAPACITY,
    groups: [...(fields.groups ?? DEFAULT_AGENT_GROUPS)],
    supervisor: fields.supervisor ?? false,
    createdAtMs: nowMs,
    updatedAtMs: nowMs,
  };
}

function requireAgent(record: AgentRecord | undefined, merchant: string, agent: string): AgentRecord {
  if (record === undefined) throw new CellError(ErrorCode.AgentUnknown, `merchant ${merchant} has no agent ${agent}`);
  return record;
}

/** The fields of a patch that are set: an absent field keeps its value. */
function definedFields(patch: AgentPatch): Partial<AgentRecord> {
  return Object.fromEntries(Object.entries(patch).filter(([, value]) => value !== undefined)) as Partial<AgentRecord>;
}
