// Where the client gets its JWT: a fixed token, or a provider asked for a fresh one when the
// cached token is about to expire or the cell refused it (TokenKeeper).
import type { Clock } from '../platform/clock.js';
import { invariant } from '../platform/invariant.js';
import { ClientError, ClientErrorCode, messageOf } from './errors.js';

/**
 * Where the client gets its JWT: a fixed token, or a provider the client calls for a fresh one
 * when the cached token expires or the cell rejects it. The provider receives a signal that
 * aborts when the client gives the attempt up or closes.
 */
export type TokenSource = string | ((signal: AbortSignal) => Promise<string>);

/** Keeps the token of a TokenSource: the provider's last answer, until it goes stale. */
export class TokenKeeper {
  private cached: string | undefined;
  /** The cell refused the cached token: the next attempt asks the provider again. */
  private stale = false;
  private pending: AbortController | undefined;

  constructor(
    private readonly source: TokenSource,
    private readonly clock: Clock,
    private readonly refreshMarginMs: number,
  ) {}

  get hasProvider(): boolean {
    return typeof this.source !== 'string';
  }

  /**
   * A token to connect with at once: the fixed one, or the provider's last unless it was
   * refused or is about to expire. Undefined when the provider must be asked (`fetch`).
   */
  ready(): string | undefined {
    if (typeof this.source === 'string') return this.source;
    const token = this.cached;
    if (token === undefined || this.stale) return undefined;
    const expiresAtMs = jwtExpiresAtMs(token);
    if (expiresAtMs !== undefined && expiresAtMs - this.refreshMarginMs <= this.clock.now()) return undefined;
    return token;
  }

  /** Asks the provider; pass its answer to `accept` or `failed`. `abort` tells it to give up. */
  fetch(): Promise<string> {
    const provider = this.source;
    invariant(typeof provider !== 'string', () => 'a fixed token is ready, never fetched');
    const controller = new AbortController();
    this.pending = controller;
    try {
      return provider(controller.signal);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** Keeps the provider's answer; returns the error to end the attempt with when it is no token. */
  accept(fresh: unknown): ClientError | undefined {
    this.pending = undefined;
    if (typeof fresh !== 'string' || fresh.length === 0) {
      return new ClientError(ClientErrorCode.TokenProviderFailed, 'the token provider returned no token');
    }
    this.cached = fresh;
    this.stale = false;
    return undefined;
  }

  /** The error to end the attempt with when the provider failed. */
  failed(error: unknown): ClientError {
    this.pending = undefined;
    return new ClientError(ClientErrorCode.TokenProviderFailed, `the token provider failed: ${messageOf(error)}`, {}, error);
  }

  /**
   * A token for a request outside the connection (an upload): the one `ready` gives, else a
   * fresh one from the provider, kept for the connection's next attempt too.
   */
  async current(signal?: AbortSignal): Promise<string> {
    const ready = this.ready();
    if (ready !== undefined) return ready;
    const provider = this.source as (signal: AbortSignal) => Promise<string>;
    let fresh: unknown;
    try {
      fresh = await provider(signal ?? new AbortController().signal);
    } catch (error) {
      throw new ClientError(ClientErrorCode.TokenProviderFailed, `the token provider failed: ${messageOf(error)}`, {}, error);
    }
    if (typeof fresh !== 'string' || fresh.length === 0) throw new ClientError(ClientErrorCode.TokenProviderFailed, 'the token provider returned no token');
    this.cached = fresh;
    this.stale = false;
    return fresh;
  }

  /** The cell refused the token: the next attempt gets a fresh one. */
  markStale(): void {
    this.stale = true;
  }

  /** Aborts the provider's pending answer, which the attempt no longer waits for. */
  abort(): void {
    this.pending?.abort();
    this.pending = undefined;
  }
}

/**
 * The `exp` claim of a JWT in ms since the epoch, read without verifying the signature (only the
 * cell can verify; the client merely avoids connecting with a token it knows is stale).
 * Undefined when the token is not a JWT with a numeric `exp`.
 */
export function jwtExpiresAtMs(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined || payload.length === 0) return undefined;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(atob(padded));
    if (typeof claims !== 'object' || claims === null) return undefined;
    const exp = (claims as Record<string, unknown>).exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}
