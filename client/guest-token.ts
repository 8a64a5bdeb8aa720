// A token source for shoppers without an account: a guest token for one merchant, whose refresh
// token the page keeps so that the same guest comes back, to the same conversation.
import { ErrorCode } from '../cell/protocol/errors.js';
import { ClientError } from './errors.js';
import { httpBaseOf, oneAtATime, postToCell } from './cell-http.js';

/** Where the guest's refresh token is kept: `localStorage` in a browser (or any object like it). */
export interface GuestStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface GuestTokenOptions {
  /** The merchant's home cell: its HTTP URL, or the client's `ws(s)://.../v1/ws` URL. */
  url: string;
  tenant: string;
  merchant: string;
  /** `localStorage` in a browser; a Map in Node (its life is the process's). */
  storage: GuestStorage | Map<string, string>;
  /** This page's device id; by default the cell picks one per guest. */
  device?: string;
}

interface GuestAnswer {
  token: string;
  refreshToken: string;
}

/** The storage key of a merchant's guest refresh token. */
export function guestStorageKey(tenant: string, merchant: string): string {
  return `cellmesh.guest.${tenant}.${merchant}`;
}

/**
 * Asks `POST /v1/guest` for a customer token at each call, with the refresh token found in
 * `storage` (the same guest again) or without one (a new guest), and keeps the rotated refresh
 * token there. A kept token the cell refuses (expired, revoked) is dropped, and the page becomes a
 * new guest. Pass it as the client's `token`.
 */
export function guestTokenSource(options: GuestTokenOptions): (signal: AbortSignal) => Promise<string> {
  const cell = { base: httpBaseOf(options.url) };
  const storage = storageOf(options.storage);
  const key = guestStorageKey(options.tenant, options.merchant);
  const request = (refreshToken: string | undefined): Record<string, string> => ({
    tenant: options.tenant,
    merchant: options.merchant,
    ...(options.device === undefined ? {} : { device: options.device }),
    ...(refreshToken === undefined ? {} : { refreshToken }),
  });
  return oneAtATime(async (signal) => {
    // Read at each call: another tab of the page may have rotated the token since.
    const kept = storage.getItem(key) ?? undefined;
    let answer: GuestAnswer;
    try {
      answer = (await postToCell(cell, '/v1/guest', request(kept), signal)) as GuestAnswer;
    } catch (error) {
      if (kept === undefined || !(error instanceof ClientError && error.code === ErrorCode.RefreshInvalid)) throw error;
      storage.removeItem(key);
      answer = (await postToCell(cell, '/v1/guest', request(undefined), signal)) as GuestAnswer;
    }
    storage.setItem(key, answer.refreshToken);
    return answer.token;
  });
}

function storageOf(storage: GuestStorage | Map<string, string>): GuestStorage {
  if (!(storage instanceof Map)) return storage;
  return {
    getItem: (key) => storage.get(key) ?? null,
    setItem: (key, value) => void storage.set(key, value),
    removeItem: (key) => void storage.delete(key),
  };
}
