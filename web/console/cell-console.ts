// The cell console (/app/console.html): the cluster as the cell that served the page sees it
// (GET /v1/admin/cluster), the desks of its merchants (GET /v1/admin/desks), its drain (GET/POST/DELETE /v1/admin/drain), and moves of the merchants
// it hosts (POST /v1/admin/merchants/move), with the admin token the operator types in. It polls
// every two seconds and draws each cell's load over the last minutes from what it polled.
import { byId, h, replaceChildren } from '../shared/dom.js';
import { figuresOf, parsePrometheus, type CellFigures } from './cell-figures.js';
import { deskRows, type DesksView } from './desk-panel.js';

interface CellSummary {
  cellId: string;
  role: 'cell' | 'router';
  liveness: string;
  incarnation: number;
  load: { devices: number; messagesPerSecond: number };
  merchants: Array<{ tenant: string; merchant: string; epoch: number }>;
  lastHeardAgoMs: number;
}

interface ClusterView {
  self: string;
  incarnation: number;
  localHealth: number;
  peers: number;
  cells: CellSummary[];
  conflicts: Array<{ tenant: string; merchant: string; epoch: number; claimants: string[]; winner: string }>;
}

interface DrainView {
  state: string;
  counts: { pending: number; moving: number; moved: number; failed: number };
}

const POLL_MS = 2_000;
/** Samples kept per cell for its plot: three minutes at one sample per poll. */
const SAMPLES = 90;

export class CellConsole {
  private token: string | undefined;
  private readonly loads = new Map<string, number[]>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private notice: string | undefined;
  private lastLocate: { total: number; atMs: number } | undefined;
  private readonly merchantCells = new Map<string, { key: string; element: HTMLTableCellElement }>();
  private readonly rows = new Map<string, HTMLTableRowElement>();

  constructor(
    private readonly origin: string,
    private readonly storage: Storage,
  ) {
    byId<HTMLFormElement>('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.open(byId<HTMLInputElement>('token').value.trim());
    });
    byId('forget').addEventListener('click', () => {
      storage.removeItem(TOKEN_KEY);
      window.location.reload();
    });
    byId('drain').addEventListener('click', () => {
      if (window.confirm('Move every merchant of this cell to the other cells, and take no new ones?')) void this.call('POST', '/v1/admin/drain', {});
    });
    byId('cancel-drain').addEventListener('click', () => void this.call('DELETE', '/v1/admin/drain'));
    const kept = storage.getItem(TOKEN_KEY);
    if (kept !== null) this.open(kept);
  }

  private open(token: string): void {
    this.token = token;
    this.storage.setItem(TOKEN_KEY, token);
    clearTimeout(this.timer);
    void this.poll();
  }

  private async poll(): Promise<void> {
    try {
      const [cluster, drain, desks, metrics] = await Promise.all([
        this.get<ClusterView>('/v1/admin/cluster'),
        this.get<DrainView>('/v1/admin/drain'),
        this.get<DesksView>('/v1/admin/desks'),
        fetch(`${this.origin}/v1/metrics`).then((response) => response.text()),
      ]);
      this.record(cluster);
      this.render(cluster, drain);
      this.renderFigures(figuresOf(parsePrometheus(metrics)));
      replaceChildren(byId('desks').querySelector('tbody')!, ...deskRows(desks));
      this.timer = setTimeout(() => void this.poll(), POLL_MS);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.show(message);
      // A wrong token stops the polling; anything else (the cell restarting) is tried again.
      if (message.includes('ADMIN_FORBIDDEN')) {
        this.storage.removeItem(TOKEN_KEY);
        byId('token-form').hidden = false;
        byId('panels').hidden = true;
      } else {
        this.timer = setTimeout(() => void this.poll(), POLL_MS);
      }
    }
  }

  private async get<T>(path: string): Promise<T> {
    return (await this.call('GET', path)) as T;
  }

  /** Calls the admin API; a refusal of an action is shown, a refusal of a GET thrown. */
  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const response = await fetch(`${this.origin}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token ?? ''}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const answer = (await response.json().catch(() => ({}))) as { error?: { code?: string; message?: string } };
    if (response.ok) {
      if (method !== 'GET') this.notice = undefined;
      return answer;
    }
    const text = `${answer.error?.message ?? `HTTP ${response.status}`} (${answer.error?.code ?? response.status})`;
    if (method === 'GET') throw new Error(text);
    this.notice = `${method} ${path}: ${text}`;
    this.show(this.notice);
    return undefined;
  }

  private record(cluster: ClusterView): void {
    for (const cell of cluster.cells) pushSample(this.loads, cell.cellId, cell.load.devices);
  }

  private render(cluster: ClusterView, drain: DrainView): void {
    byId('token-form').hidden = true;
    byId('panels').hidden = false;
    byId('controls').hidden = false;
    this.show(this.notice);
    byId('self').textContent = `${cluster.self} (incarnation ${cluster.incarnation}, ${cluster.peers} peers connected, local health ${cluster.localHealth})`;
    const targets = cluster.cells.filter((cell) => cell.role === 'cell' && cell.cellId !== cluster.self && cell.liveness === 'alive');
    const rows = cluster.cells.map((cell) => {
      const cells: HTMLTableCellElement[] = [
        h('th', { scope: 'row' }, cell.cellId, cell.cellId === cluster.self ? ' (this cell)' : '', cell.role === 'router' ? ' (router)' : ''),
        h('td', { class: `liveness ${cell.liveness}` }, cell.liveness),
        h('td', {}, String(cell.incarnation)),
        h('td', {}, String(cell.load.devices)),
        h('td', {}, cell.load.messagesPerSecond.toFixed(1)),
        h('td', {}, sparkline(this.loads.get(cell.cellId) ?? [], `devices of ${cell.cellId} over the last minutes`)),
        this.merchantsCell(cell, cell.cellId === cluster.self ? targets : []),
        h('td', {}, cell.lastHeardAgoMs === 0 ? '-' : `${(cell.lastHeardAgoMs / 1000).toFixed(1)} s ago`),
      ];
      return this.rowOf(cell, cells);
    });
    const body = byId('cells').querySelector('tbody')!;
    for (const [cellId, row] of this.rows) if (!rows.includes(row)) this.rows.delete(cellId);
    // Rows are put in place again only when the cells changed (one joined or was forgotten).
    if (rows.length !== body.children.length || rows.some((row, index) => body.children[index] !== row)) replaceChildren(body, ...rows);
    replaceChildren(
      byId('conflicts'),
      ...(cluster.conflicts.length === 0
        ? [h('li', {}, 'None: every merchant has one home.')]
        : cluster.conflicts.map((conflict) => h('li', {}, `${conflict.tenant}/${conflict.merchant} at epoch ${conflict.epoch}: claimed by ${conflict.claimants.join(', ')}; ${conflict.winner} wins`))),
    );
    const { counts } = drain;
    byId('drain-state').textContent = `${drain.state}: ${counts.moved} moved, ${counts.moving} moving, ${counts.pending} pending, ${counts.failed} failed`;
    byId('drain').hidden = drain.state === 'draining';
    byId('cancel-drain').hidden = drain.state !== 'draining';
  }

  /** This cell's own figures, with plots of connections and location queries per second. */
  private renderFigures(figures: CellFigures): void {
    const nowMs = Date.now(); // real-clock-ok: a rate between two polls of a page
    const previous = this.lastLocate;
    const locateRate = previous === undefined ? 0 : Math.max(0, figures.locateQueriesTotal - previous.total) / Math.max(0.001, (nowMs - previous.atMs) / 1000);
    this.lastLocate = { total: figures.locateQueriesTotal, atMs: nowMs };
    const connections = pushSample(this.loads, '#connections', figures.connections);
    const locates = pushSample(this.loads, '#locate', locateRate);
    const listed = (entries: Array<[string, number]>): string => {
      const some = entries.filter(([, value]) => value > 0);
      return some.length === 0 ? 'none' : some.map(([name, value]) => `${name} ${value}`).join(', ');
    };
    const rows: Array<[string, string, SVGSVGElement | null]> = [
      ['Connections', String(figures.connections), sparkline(connections, 'connections over the last minutes')],
      ['Location queries per second', locateRate.toFixed(2), sparkline(locates, 'location queries per second over the last minutes')],
      ['Outbox to other cells', `${figures.outboxEntries} entries waiting, the oldest ${figures.outboxOldestSeconds.toFixed(1)} s`, null],
      ['Customers waiting, by group', listed(figures.queueByGroup), null],
      ['Agents, by status', listed(figures.agentsByStatus), null],
      ['Open consultations, by state', listed(figures.consultationsByState), null],
    ];
    replaceChildren(byId('figures'), ...rows.flatMap(([term, value, plot]) => [h('dt', {}, term), h('dd', { 'data-figure': term }, value, plot === null ? null : ' ', plot)]));
  }

  /** The cell's row, updated in place cell by cell (what did not change stays, with its focus). */
  private rowOf(cell: CellSummary, cells: HTMLTableCellElement[]): HTMLTableRowElement {
    const row = this.rows.get(cell.cellId);
    if (row === undefined) {
      const created = h('tr', { 'data-cell': cell.cellId, 'data-liveness': cell.liveness }, ...cells);
      this.rows.set(cell.cellId, created);
      return created;
    }
    row.setAttribute('data-liveness', cell.liveness);
    cells.forEach((element, index) => {
      const current = row.children[index];
      if (current !== element) current?.replaceWith(element);
    });
    return row;
  }

  /**
   * A cell's merchants, built again only when they or the move targets changed: the poll redraws
   * the table every two seconds, and a move form being filled in (its choice, the focus) must
   * survive that.
   */
  private merchantsCell(cell: CellSummary, targets: CellSummary[]): HTMLTableCellElement {
    const key = JSON.stringify([cell.merchants.map((claim) => [claim.tenant, claim.merchant, claim.epoch]), targets.map((target) => target.cellId)]);
    const kept = this.merchantCells.get(cell.cellId);
    if (kept?.key === key) return kept.element;
    const element = h('td', {}, h('ul', { class: 'plain' }, ...cell.merchants.map((claim) => this.merchantItem(claim, targets))));
    this.merchantCells.set(cell.cellId, { key, element });
    return element;
  }

  /** A merchant; one hosted by this cell has a move form (the move is asked of its home). */
  private merchantItem(claim: CellSummary['merchants'][number], targets: CellSummary[]): HTMLLIElement {
    const name = `${claim.tenant}/${claim.merchant}`;
    if (targets.length === 0) return h('li', { 'data-merchant': name }, `${name} (epoch ${claim.epoch})`);
    const selectId = `move-${claim.tenant}-${claim.merchant}`;
    const select = h('select', { id: selectId }, ...targets.map((cell) => h('option', { value: cell.cellId }, cell.cellId)));
    const form = h(
      'form',
      { class: 'move' },
      h('label', { for: selectId }, `Move ${name} to`),
      select,
      h('button', { type: 'submit' }, 'Move'),
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.call('POST', '/v1/admin/merchants/move', { tenant: claim.tenant, merchant: claim.merchant, to: select.value });
    });
    return h('li', { 'data-merchant': name }, `${name} (epoch ${claim.epoch})`, form);
  }

  private show(problem: string | undefined): void {
    const banner = byId('banner');
    banner.hidden = problem === undefined;
    banner.textContent = problem ?? '';
    banner.className = 'banner fatal';
  }
}

const TOKEN_KEY = 'cellmesh.console.token';

/** Adds a sample to the series `key` (at most SAMPLES kept) and answers the series. */
function pushSample(series: Map<string, number[]>, key: string, value: number): number[] {
  const samples = series.get(key) ?? [];
  samples.push(value);
  if (samples.length > SAMPLES) samples.shift();
  series.set(key, samples);
  return samples;
}

/** A small line of `values` (drawn with SVG, no library), labelled for screen readers. */
function sparkline(values: readonly number[], label: string): SVGSVGElement {
  const width = 120;
  const height = 28;
  const namespace = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(namespace, 'svg');
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `${label}: ${values.at(-1) ?? 0} now, at most ${Math.max(0, ...values)}`);
  const top = Math.max(1, ...values);
  const step = width / Math.max(1, SAMPLES - 1);
  const offset = (SAMPLES - values.length) * step;
  const points = values.map((value, index) => `${(offset + index * step).toFixed(1)},${(height - 2 - (value / top) * (height - 4)).toFixed(1)}`);
  const baseline = document.createElementNS(namespace, 'line');
  for (const [name, value] of [['x1', '0'], ['x2', String(width)], ['y1', String(height - 1)], ['y2', String(height - 1)], ['stroke', '#9ca3af']]) baseline.setAttribute(name as string, value as string);
  svg.appendChild(baseline);
  const line = document.createElementNS(namespace, 'polyline');
  line.setAttribute('points', points.join(' '));
  line.setAttribute('fill', 'none');
  line.setAttribute('stroke', 'currentColor');
  line.setAttribute('stroke-width', '1.5');
  svg.appendChild(line);
  return svg;
}
