import { listenFailureOf } from '../platform/listen-probe.js';

/**
 * Why a cell cannot start, in one line that names the setting to change: a busy port, an
 * address that is not this machine's, a store directory another process holds. `cellmesh cell`
 * prints it and exits 2, like a config error (docs/operations.md, "Exit codes").
 */
export class CellStartError extends Error {
  readonly code = 'CELL_START_FAILED';

  constructor(
    readonly setting: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(`${setting}: ${message}`, options);
    this.name = 'CellStartError';
  }
}

/** The config paths of one listen address: `listen.*` for devices, `mesh.listen.*` for libp2p. */
export interface ListenSettings {
  readonly host: string;
  readonly port: string;
}

/**
 * The CellStartError for a listener that failed on `host:port`, from the OS's reason; `cause`
 * itself when the address can be listened on now (the failure was something else).
 */
export async function listenStartError(settings: ListenSettings, host: string, port: number, cause: unknown): Promise<unknown> {
  const reason = await listenFailureOf(host, port);
  switch (reason) {
    case undefined:
      return cause;
    case 'EADDRINUSE':
      return new CellStartError(settings.port, `port ${port} is in use on ${host} (another cell or process listens there)`, { cause });
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new CellStartError(settings.host, `${host} is not an address of this machine`, { cause });
    case 'EACCES':
      return new CellStartError(settings.port, `port ${port} on ${host} needs privileges this process lacks`, { cause });
    default:
      return new CellStartError(settings.port, `cannot listen on ${host}:${port} (${reason})`, { cause });
  }
}
