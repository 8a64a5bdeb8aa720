import type { Identity } from '../access/tokens.js';
import type { DeviceConnection } from '../messaging/device.js';
import { CellError, CloseCode, ErrorCode } from '../protocol/errors.js';
import type { MerchantHome, ServerFrame } from '../protocol/frames.js';

/**
 * What the core reads of the cluster's gossiped directory to redirect devices (docs/routing.md).
 * The assembly builds it from the mesh; a standalone cell has none and never redirects.
 */
export interface HomeDirectory {
  /** The merchant's home cell if it is serving (alive, suspect or leaving); undefined when unknown or not serving. */
  homeOf(tenant: string, merchant: string): MerchantHome | undefined;
  /** The public endpoints a cell of the directory advertises; undefined for a cell it does not hold. */
  endpointsOf(cellId: string): { ws: string; http: string } | undefined;
  /** Whether the merchant has a home that is down: dead, or left still claiming it (it may come back with its disk). */
  homeIsDown(tenant: string, merchant: string): boolean;
}

/**
 * Redirects to a merchant's home cell: the MERCHANT_ELSEWHERE answer to a device or request
 * whose merchant lives in another serving cell, and the closing of this cell's connections of a
 * merchant that moved away (agents, and customers whose connection was routed for it).
 */
export class MerchantRedirects {
  private directory: HomeDirectory | undefined;
  /**
   * Where merchants moved from here went, by tenant/merchant: until this cell's copy of the
   * directory hears the new claim it still names this cell as their home. At most one entry per
   * merchant this cell ever hosted, dropped once the directory names another home.
   */
  private readonly movedAway = new Map<string, MerchantHome>();

  constructor(private readonly selfCellId: string) {}

  /** From now on, merchants this cell does not host are looked up in `directory`. Once only. */
  attach(directory: HomeDirectory): void {
    if (this.directory !== undefined) throw new Error('the redirects are attached to a directory already');
    this.directory = directory;
  }

  /**
   * Whether a customer's device routed for `routedFor` (undefined: routed for no merchant) wants
   * the conversations homed at `cellId`: an unrouted one wants all, a routed one only its
   * merchant's. A merchant whose home the directory does not name (down, or unknown yet) counts
   * as wanted: a copy too many is harmless, one too few is not.
   */
  wantsConversationsOf(tenant: string, routedFor: string | undefined, cellId: string): boolean {
    if (routedFor === undefined) return true;
    const home = this.directory?.homeOf(tenant, routedFor);
    return home === undefined || home.cellId === cellId;
  }

  /** The serving home of `merchant` when it is another cell; undefined when unknown, not serving, or this cell. */
  homeElsewhere(tenant: string, merchant: string): MerchantHome | undefined {
    const home = this.directory?.homeOf(tenant, merchant);
    const key = `${tenant}/${merchant}`;
    if (home?.cellId !== this.selfCellId) {
      // The directory knows better than this cell's memory of a move: it heard the claim.
      this.movedAway.delete(key);
      return home;
    }
    const moved = this.movedAway.get(key);
    return moved !== undefined && moved.epoch > home.epoch ? moved : undefined;
  }

  /**
   * Refuses a connection routed for a merchant this cell does not host (`hosts` says): an
   * agent always, a customer only when the merchant's home is known and serving elsewhere
   * (otherwise it is served cross-cell, as without routing). Answers the merchant it is routed for.
   */
  admitRouted(identity: Identity, customerRoutedFor: string | undefined, hosts: (merchant: string) => boolean): string | undefined {
    const merchant = identity.merchant ?? customerRoutedFor;
    if (merchant === undefined || hosts(merchant)) return merchant;
    if (identity.role === 'agent') throw this.refusal(identity.tenant, merchant, `merchant ${merchant} is not hosted by this cell`);
    const home = this.homeElsewhere(identity.tenant, merchant);
    if (home !== undefined) throw merchantElsewhere(merchant, home);
    return merchant;
  }

  /**
   * The refusal of a merchant this cell does not host: MERCHANT_ELSEWHERE with its home when
   * another serving cell hosts it, HOME_UNAVAILABLE (transient) while its home is down (its
   * customers leave messages here, its agents wait for the home), otherwise MERCHANT_NOT_HOSTED
   * with `notHostedMessage`.
   */
  refusal(tenant: string, merchant: string, notHostedMessage: string): CellError {
    const home = this.homeElsewhere(tenant, merchant);
    if (home !== undefined) return merchantElsewhere(merchant, home);
    if (this.directory?.homeIsDown(tenant, merchant) === true) {
      return new CellError(ErrorCode.HomeUnavailable, `the home cell of merchant ${merchant} is down; its agents work only there: retry once it is back`, { retryAfterMs: HOME_DOWN_RETRY_MS });
    }
    return new CellError(ErrorCode.MerchantNotHosted, notHostedMessage);
  }

  /**
   * Merchants of `merchants` (`tenant/merchant` keys) got a serving home: it came back, or an
   * operator re-homed them. The customers connected here routed for one of them that this cell
   * does not host were admitted while it had none (leave-a-message mode): each gets the redirect
   * and 4307, so that it continues at the home, where its client sends again, ahead of anything
   * later, what it left queued here (the cmids make the copies in this cell's outbox harmless).
   */
  redirectToServingHomes(connections: Iterable<DeviceConnection>, merchants: ReadonlySet<string>, send: (connection: DeviceConnection, frame: ServerFrame) => void): void {
    for (const connection of [...connections]) {
      const { identity, routedFor } = connection;
      if (connection.closed || identity.role !== 'customer' || routedFor === undefined || !merchants.has(`${identity.tenant}/${routedFor}`)) continue;
      const home = this.homeElsewhere(identity.tenant, routedFor);
      if (home === undefined) continue;
      send(connection, errorFrameOf(merchantElsewhere(routedFor, home)));
      connection.port.close(CloseCode.MerchantElsewhere, ErrorCode.MerchantElsewhere);
    }
  }

  /**
   * A move handed `merchant` to `newHome` (committed there, the claim not gossiped here yet):
   * every connection in `connections` routed for it gets the redirect frame and is closed with
   * 4307; the others (customers routed for other merchants) stay, served cross-cell from now on.
   * Without the new home's endpoints they are closed with 1001 and route again.
   */
  redirectMovedAway(connections: Iterable<DeviceConnection>, tenant: string, merchant: string, newHome: { cellId: string; epoch: number }, send: (connection: DeviceConnection, frame: ServerFrame) => void): void {
    const endpoints = this.directory?.endpointsOf(newHome.cellId);
    if (endpoints !== undefined) this.movedAway.set(`${tenant}/${merchant}`, { ...newHome, ...endpoints });
    const redirect = endpoints === undefined ? undefined : merchantElsewhere(merchant, { ...newHome, ...endpoints });
    for (const connection of [...connections]) {
      if (connection.identity.tenant !== tenant || connection.routedFor !== merchant) continue;
      if (redirect === undefined) {
        connection.port.close(CloseCode.GoingAway, `merchant ${merchant} moved to cell ${newHome.cellId}; route again`);
        continue;
      }
      send(connection, errorFrameOf(redirect));
      connection.port.close(CloseCode.MerchantElsewhere, ErrorCode.MerchantElsewhere);
    }
  }
}

/** How long a refusal for a home that is down tells the client to wait: about how long a restarted cell takes to rejoin. */
const HOME_DOWN_RETRY_MS = 5_000;

/** MERCHANT_ELSEWHERE: `merchant` lives in `home`; `details.home` carries it to the client. */
export function merchantElsewhere(merchant: string, home: MerchantHome): CellError {
  const { cellId, ws, http, epoch } = home;
  return new CellError(ErrorCode.MerchantElsewhere, `merchant ${merchant} lives in cell ${cellId}; connect to ${ws} (or ${http})`, { home: { cellId, ws, http, epoch } });
}

/** The home a MERCHANT_ELSEWHERE error carries; undefined for any other error. */
export function homeOf(error: CellError): MerchantHome | undefined {
  return error.code === ErrorCode.MerchantElsewhere ? (error.details?.['home'] as MerchantHome | undefined) : undefined;
}

/** The `error` frame of a refusal without a request, with the home of a redirect. */
export function errorFrameOf(error: CellError): ServerFrame {
  const home = homeOf(error);
  return home === undefined ? { t: 'error', code: error.code, message: error.message } : { t: 'error', code: error.code, message: error.message, home };
}
