import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import type uWS from 'uWebSockets.js';
import type { Clock } from '../../platform/clock.js';
import type { Logger } from '../../platform/logger.js';
import type { Store } from '../../platform/store/store.js';
import { backupCellStore, canSnapshot } from '../cell-backup.js';
import { CellError, ErrorCode } from '../protocol/errors.js';
import { asCellError, bearerToken, requireAdmin, writeError } from './http-router.js';
import type { RouteModule } from './uws-server.js';

/**
 * `GET /v1/admin/backup`: the backup file of a running cell (the format of `cellmesh backup`,
 * platform/store/backup-file.ts), streamed from one snapshot of its store while it goes on
 * serving, with the mesh key when it has one. Needs the admin token; one backup at a time; a
 * store without snapshots (Redis) answers BACKUP_UNSUPPORTED. A failure midway closes the
 * connection, so the file is cut short and `cellmesh restore` refuses it.
 */
export interface AdminBackupComponents {
  cellId: string;
  /** The cell's store, open. */
  store: Store;
  /** The store adapter's name for the header (`level`, `redis`). */
  source: string;
  clock: Clock;
  logger: Logger;
  /** The admin token and those accepted during a rotation; empty: the admin API is disabled. */
  adminTokens: readonly string[];
  /** The cell's mesh key file (a cell in a mesh), which the backup carries. */
  meshKeyFile?: string | undefined;
}

export function adminBackupRoutes(components: AdminBackupComponents): RouteModule {
  const { store, logger } = components;
  let streaming = false;
  return (router) => {
    router.on('get', '/v1/admin/backup', (res, req) => {
      const token = bearerToken(req.getHeader('authorization'));
      const response = new ResponseStream(res);
      try {
        requireAdmin(token, components.adminTokens);
        if (!canSnapshot(store)) {
          throw new CellError(ErrorCode.BackupUnsupported, `the ${components.source} store cannot be read from a snapshot while the cell runs: back it up with the store's own tools (docs/operations.md, "Backup and restore")`);
        }
        if (streaming) throw new CellError(ErrorCode.BackupInProgress, 'a backup of this cell is being streamed already; wait for it to end');
      } catch (error) {
        writeError(res, asCellError(error, logger));
        return;
      }
      streaming = true;
      void (async () => {
        const startedAtMs = components.clock.now();
        const createdAt = new Date(startedAtMs).toISOString();
        try {
          const meshKey = components.meshKeyFile === undefined ? undefined : (await readFile(components.meshKeyFile)).toString('base64');
          const file = `${components.cellId}-${createdAt.replace(/[:.]/g, '-')}.backup.gz`;
          response.start({ 'content-type': 'application/gzip', 'content-disposition': `attachment; filename="${file}"`, 'cache-control': 'no-store' });
          const totals = await backupCellStore(store, response.body, { cellId: components.cellId, source: components.source, createdAt, meshKey, snapshot: true });
          logger.info({ entries: totals.entries, bytes: totals.bytes, ms: components.clock.now() - startedAtMs }, 'backup streamed');
        } catch (error) {
          logger.warn({ err: error }, 'a backup stream failed; its connection is closed (a restore refuses the file)');
          response.fail(error, logger);
        } finally {
          streaming = false;
        }
      })();
    });
  };
}

/**
 * A uWS response as a Node stream, with its backpressure: a chunk uWS could not send at once
 * holds the next one back until the socket is writable again.
 */
class ResponseStream {
  readonly body: Writable;
  private aborted = false;
  private started = false;
  private resume: ((error?: Error) => void) | undefined;

  constructor(private readonly res: uWS.HttpResponse) {
    res.onAborted(() => {
      this.aborted = true;
      this.takeResume()?.(new Error('the client went away'));
    });
    res.onWritable(() => {
      this.takeResume()?.();
      return true;
    });
    this.body = new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        if (this.aborted) {
          done(new Error('the client went away'));
          return;
        }
        let sent = false;
        res.cork(() => {
          sent = res.write(chunk);
        });
        if (sent) done();
        else this.resume = done;
      },
      final: (done) => {
        if (!this.aborted) res.cork(() => res.end());
        done();
      },
    });
  }

  /** Writes the status line and headers (once the answer is known to be a backup). */
  start(headers: Record<string, string>): void {
    if (this.aborted) return;
    this.started = true;
    this.res.cork(() => {
      this.res.writeStatus('200 OK');
      for (const [name, value] of Object.entries(headers)) this.res.writeHeader(name, value);
    });
  }

  /** Before the headers: an error answer; after: the connection is cut, so the file is incomplete. */
  fail(error: unknown, logger: Logger): void {
    if (this.aborted) return;
    this.aborted = true;
    if (this.started) this.res.close();
    else this.res.cork(() => writeError(this.res, asCellError(error, logger)));
  }

  private takeResume(): ((error?: Error) => void) | undefined {
    const resume = this.resume;
    this.resume = undefined;
    return resume;
  }
}
