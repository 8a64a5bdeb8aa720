import type { SeriesPoint, SimReport } from './sim-report.js';
import type { FaultSpan } from './sim-world.js';

/**
 * The reports of a run: the JSON report (stable key order; two runs of one seed differ only in
 * `wallSeconds` and `simSpeed`), a text summary, and a self-contained HTML page with inline SVG
 * plots (no scripts, no external files) that a person can open in a browser.
 */

export function reportJson(report: SimReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

/** The report without its wall-clock and CPU figures: byte-identical for one seed, scenario and code. */
export function deterministicJson(report: SimReport): string {
  const { wallSeconds: _wall, simSpeed: _speed, cpuSeconds: _cpu, ...rest } = report;
  return `${JSON.stringify(rest, null, 2)}\n`;
}

export function summaryText(report: SimReport): string {
  const lines = [
    `scenario ${report.scenario}, seed ${report.seed}`,
    `  cells ${report.cells} (${report.cellsAtEnd} at the end), merchants ${report.merchants}, customers ${report.customers}, agents ${report.agents}, devices ${report.devices}`,
    `  messages sent ${report.messagesSent}, acked ${report.messagesAcked}, deliveries ${report.deliveries}, receipts ${report.receipts}`,
    `  send failures ${formatCounts(report.sendFailures)} (during partitions: ${formatCounts(report.sendFailuresDuringPartitions)}); client errors ${formatCounts(report.clientErrors)}`,
    `  error answers ${formatCounts(report.errorAnswers)}; disk faults: ${diskText(report)}`,
    `  virtual ${report.virtualSeconds.toFixed(1)} s in ${report.wallSeconds.toFixed(1)} s wall (${report.cpuSeconds.toFixed(1)} s CPU): ${report.simSpeed} virtual s per wall s`,
    `  ack latency in-cell p50 ${report.ackLatency.inCell.p50Ms} ms p99 ${report.ackLatency.inCell.p99Ms} ms; cross-cell p50 ${report.ackLatency.crossCell.p50Ms} ms p99 ${report.ackLatency.crossCell.p99Ms} ms`,
    `  converged ${report.convergeMsAfterHeal === null ? 'never' : `${report.convergeMsAfterHeal} ms`} after the final heal (bound ${report.bounds.convergeWithinMs} ms)`,
    `  in-cell sends during partitions acked within ${report.inCellDeliveryDuringPartition.boundMs} ms: ${report.inCellDeliveryDuringPartition.ackedWithinBound}/${report.inCellDeliveryDuringPartition.eligible} (${(report.inCellDeliveryDuringPartition.ratio * 100).toFixed(2)}%, required ${report.inCellDeliveryDuringPartition.required * 100}%)`,
    routingText(report),
    ...(report.desk === undefined ? [] : [deskText(report.desk)]),
    report.violations === 0 ? '  invariants: all hold' : `  VIOLATIONS: ${report.violations} (${formatCounts(report.violationsByKind)})`,
  ];
  for (const example of report.violationExamples.slice(0, 10)) {
    lines.push(`    ${example.kind}${example.atMs === undefined ? '' : ` at ${(example.atMs / 1000).toFixed(3)} s`}: ${example.message}`);
  }
  lines.push(`  digest ${report.digest}`);
  return lines.join('\n');
}

function routingText(report: SimReport): string {
  const { moves, outageSends: outage } = report;
  const bound = outage.acceptWithinMs === null ? 'not judged' : `${outage.servedWithinBound} within ${outage.acceptWithinMs} ms`;
  return `  routing: ${report.routeRequests} route requests; moves ${moves.moved}/${moves.started}, sessions on a new cell: agents ${moves.agentReroutes}, customers ${moves.customerReroutes}; sends during outages ${outage.sends} (queued ${outage.queued}, served ${bound}, acknowledged ${outage.acknowledged})`;
}

function deskText(desk: NonNullable<SimReport['desk']>): string {
  return `  desks ${desk.merchantsWithDesk} (${desk.deskAgents} agents): system messages ${formatCounts(desk.notices)}; agents asked ${desk.closesAsked} closes, ${desk.transfersAsked} transfers, ${desk.statusChanges} status changes, went offline ${desk.disconnects} times`;
}

function diskText(report: SimReport): string {
  const { readErrors, writeErrors, latencySpikes, failedStarts } = report.disk;
  return `${readErrors} read errors, ${writeErrors} write errors, ${latencySpikes} latency spikes, ${failedStarts} failed starts`;
}

function formatCounts(counts: Record<string, number>): string {
  const entries = Object.entries(counts);
  return entries.length === 0 ? 'none' : entries.map(([key, count]) => `${key} ${count}`).join(', ');
}

// -- HTML --------------------------------------------------------------------------------------

const SPAN_COLORS: Record<string, string> = {
  partition: '#e4572e',
  oneWay: '#f3a712',
  crash: '#6c757d',
  loss: '#8e44ad',
  latency: '#2e86de',
  leave: '#16a085',
  join: '#16a085',
  deviceFlap: '#c0392b',
};

interface Line {
  readonly name: string;
  readonly color: string;
  readonly points: ReadonlyArray<readonly [number, number]>;
}

export function reportHtml(report: SimReport): string {
  const series = report.series;
  const endS = Math.max(report.virtualSeconds, series.at(-1)?.t ?? 0);
  const rates = ratesOf(series);
  const finalHealS = report.heals.find((heal) => heal.what === 'final heal')?.atS;
  const plots = [
    linePlot('Messages per second (sent by devices, delivered to devices)', 'msgs/s', endS, finalHealS, report.faults, [
      { name: 'sent', color: '#1f77b4', points: rates.map((point) => [point.t, point.sent] as const) },
      { name: 'delivered', color: '#2ca02c', points: rates.map((point) => [point.t, point.delivered] as const) },
      { name: 'acked', color: '#ff7f0e', points: rates.map((point) => [point.t, point.acked] as const) },
    ]),
    linePlot('Entries waiting in outboxes (all cells)', 'entries', endS, finalHealS, report.faults, [
      { name: 'waiting', color: '#d62728', points: series.map((point) => [point.t, point.outboxWaiting] as const) },
    ]),
    linePlot('Directory convergence: share of running cells holding the most common membership view', 'share', endS, finalHealS, report.faults, [
      { name: 'agreement', color: '#9467bd', points: series.map((point) => [point.t, point.agreement] as const) },
    ], 1),
    linePlot('Cells running', 'cells', endS, finalHealS, report.faults, [{ name: 'cells up', color: '#17becf', points: series.map((point) => [point.t, point.cellsUp] as const) }]),
  ];
  const status = report.violations === 0 ? '<p class="ok">All invariants hold.</p>' : `<p class="bad">${report.violations} violations: ${escapeHtml(formatCounts(report.violationsByKind))}</p>`;
  const summaryRows: Array<[string, string]> = [
    ['seed', String(report.seed)],
    ['replay', `<code>${escapeHtml(report.replay)}</code>`],
    ['cells (start / end)', `${report.cells} / ${report.cellsAtEnd}`],
    ['merchants, customers, agents, devices', `${report.merchants}, ${report.customers}, ${report.agents}, ${report.devices}`],
    ['messages sent / acked', `${report.messagesSent} / ${report.messagesAcked}`],
    ['deliveries, receipts', `${report.deliveries}, ${report.receipts}`],
    ['send failures (during partitions)', escapeHtml(`${formatCounts(report.sendFailures)} (${formatCounts(report.sendFailuresDuringPartitions)})`)],
    ['client errors', escapeHtml(formatCounts(report.clientErrors))],
    ['error answers of the cells', escapeHtml(formatCounts(report.errorAnswers))],
    ['disk faults', escapeHtml(diskText(report))],
    ['virtual seconds / wall seconds (CPU seconds)', `${report.virtualSeconds.toFixed(1)} / ${report.wallSeconds.toFixed(1)} (${report.cpuSeconds.toFixed(1)}); simSpeed ${report.simSpeed}`],
    ['ack latency in-cell (p50 / p99 / max)', `${report.ackLatency.inCell.p50Ms} / ${report.ackLatency.inCell.p99Ms} / ${report.ackLatency.inCell.maxMs} ms`],
    ['ack latency cross-cell (p50 / p99 / max)', `${report.ackLatency.crossCell.p50Ms} / ${report.ackLatency.crossCell.p99Ms} / ${report.ackLatency.crossCell.maxMs} ms`],
    ['converged after the final heal', report.convergeMsAfterHeal === null ? 'never' : `${report.convergeMsAfterHeal} ms (bound ${report.bounds.convergeWithinMs} ms)`],
    [
      'in-cell sends during partitions acked in time',
      `${report.inCellDeliveryDuringPartition.ackedWithinBound} / ${report.inCellDeliveryDuringPartition.eligible} = ${(report.inCellDeliveryDuringPartition.ratio * 100).toFixed(2)}% within ${report.inCellDeliveryDuringPartition.boundMs} ms (required ${report.inCellDeliveryDuringPartition.required * 100}%)`,
    ],
    ['routing, moves and outages', escapeHtml(routingText(report).trim())],
    ['digest', `<code>${report.digest}</code>`],
  ];
  const violationRows = report.violationExamples.map((violation) => `<tr><td>${escapeHtml(violation.kind)}</td><td>${violation.atMs === undefined ? '' : (violation.atMs / 1000).toFixed(3)}</td><td>${escapeHtml(violation.message)}</td></tr>`);
  const faultRows = report.faults.map((fault) => `<tr><td><span class="swatch" style="background:${SPAN_COLORS[fault.kind] ?? '#999'}"></span>${escapeHtml(fault.kind)}</td><td>${fault.startS}</td><td>${fault.endS ?? 'final heal'}</td><td>${escapeHtml(fault.detail)}</td></tr>`);
  const healRows = report.heals.map((heal) => `<tr><td>${heal.atS}</td><td>${escapeHtml(heal.what)}</td><td>${heal.convergedMs === null ? '—' : `${heal.convergedMs} ms`}</td></tr>`);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cellmesh simulation: ${escapeHtml(report.scenario)} seed ${report.seed}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border-bottom: 1px solid #ddd; padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
.ok { color: #1b7f3b; font-weight: 600; } .bad { color: #b00020; font-weight: 600; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; opacity: .6; }
svg { display: block; margin: .5em 0 1.5em; } code { font-size: 12px; }
</style>
</head>
<body>
<h1>cellmesh simulation: ${escapeHtml(report.scenario)}, seed ${report.seed}</h1>
${status}
<table>${summaryRows.map(([key, value]) => `<tr><th>${escapeHtml(key)}</th><td>${value}</td></tr>`).join('\n')}</table>
<h2>Over virtual time</h2>
<p>Shaded bands are faults (${Object.entries(SPAN_COLORS).filter(([kind]) => report.faults.some((fault) => fault.kind === kind)).map(([kind, color]) => `<span class="swatch" style="background:${color}"></span>${kind}`).join(' ')}); the dashed line is the final heal.</p>
${plots.join('\n')}
<h2>Heals and convergence</h2>
<table><tr><th>at (s)</th><th>heal</th><th>converged after</th></tr>${healRows.join('\n')}</table>
<h2>Faults</h2>
<table><tr><th>kind</th><th>from (s)</th><th>to (s)</th><th>detail</th></tr>${faultRows.join('\n')}</table>
<h2>Violations</h2>
${violationRows.length === 0 ? '<p>None.</p>' : `<table><tr><th>kind</th><th>at (s)</th><th>what</th></tr>${violationRows.join('\n')}</table>`}
</body>
</html>
`;
}

/** Per-interval rates from the cumulative counters. */
function ratesOf(series: readonly SeriesPoint[]): Array<{ t: number; sent: number; acked: number; delivered: number }> {
  const rates: Array<{ t: number; sent: number; acked: number; delivered: number }> = [];
  for (let index = 1; index < series.length; index++) {
    const previous = series[index - 1]!;
    const point = series[index]!;
    const dt = Math.max(0.001, point.t - previous.t);
    rates.push({ t: point.t, sent: (point.sent - previous.sent) / dt, acked: (point.acked - previous.acked) / dt, delivered: (point.delivered - previous.delivered) / dt });
  }
  return rates;
}

function linePlot(title: string, unit: string, endS: number, finalHealS: number | undefined, faults: readonly FaultSpan[], lines: readonly Line[], fixedMax?: number): string {
  const width = 1000;
  const height = 220;
  const left = 60;
  const right = 10;
  const top = 24;
  const bottom = 30;
  const plotWidth = width - left - right;
  const plotHeight = height - top - bottom;
  let maxY = fixedMax ?? 0;
  if (fixedMax === undefined) for (const line of lines) for (const [, y] of line.points) maxY = Math.max(maxY, y);
  maxY = maxY <= 0 ? 1 : niceCeiling(maxY);
  const x = (seconds: number): number => left + (plotWidth * seconds) / Math.max(1, endS);
  const y = (value: number): number => top + plotHeight - (plotHeight * value) / maxY;
  const parts: string[] = [];
  parts.push(`<text x="${left}" y="15" font-size="13" font-weight="600">${escapeHtml(title)}</text>`);
  for (const fault of faults) {
    const color = SPAN_COLORS[fault.kind] ?? '#999';
    const start = x(fault.startS);
    const end = fault.endS === undefined ? x(endS) : x(fault.endS);
    if (end - start < 1.5) {
      parts.push(`<line x1="${start.toFixed(1)}" x2="${start.toFixed(1)}" y1="${top}" y2="${top + plotHeight}" stroke="${color}" stroke-width="1.5" opacity="0.7"><title>${escapeHtml(`${fault.kind} ${fault.startS}s ${fault.detail}`)}</title></line>`);
    } else {
      parts.push(`<rect x="${start.toFixed(1)}" y="${top}" width="${(end - start).toFixed(1)}" height="${plotHeight}" fill="${color}" opacity="0.15"><title>${escapeHtml(`${fault.kind} ${fault.startS}-${fault.endS ?? 'end'}s ${fault.detail}`)}</title></rect>`);
    }
  }
  if (finalHealS !== undefined) {
    parts.push(`<line x1="${x(finalHealS).toFixed(1)}" x2="${x(finalHealS).toFixed(1)}" y1="${top}" y2="${top + plotHeight}" stroke="#333" stroke-dasharray="4 3"><title>final heal at ${finalHealS}s</title></line>`);
  }
  for (let tick = 0; tick <= 4; tick++) {
    const value = (maxY * tick) / 4;
    parts.push(`<line x1="${left}" x2="${width - right}" y1="${y(value).toFixed(1)}" y2="${y(value).toFixed(1)}" stroke="#eee"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(value) + 4).toFixed(1)}" font-size="11" text-anchor="end">${formatNumber(value)}</text>`);
  }
  const step = niceCeiling(endS / 10);
  for (let seconds = 0; seconds <= endS; seconds += step) {
    parts.push(`<text x="${x(seconds).toFixed(1)}" y="${height - 10}" font-size="11" text-anchor="middle">${formatSeconds(seconds)}</text>`);
  }
  parts.push(`<line x1="${left}" x2="${left}" y1="${top}" y2="${top + plotHeight}" stroke="#999"/><line x1="${left}" x2="${width - right}" y1="${top + plotHeight}" y2="${top + plotHeight}" stroke="#999"/>`);
  parts.push(`<text x="14" y="${top + plotHeight / 2}" font-size="11" transform="rotate(-90 14 ${top + plotHeight / 2})" text-anchor="middle">${escapeHtml(unit)}</text>`);
  lines.forEach((line, index) => {
    if (line.points.length > 0) {
      const path = line.points.map(([px, py], at) => `${at === 0 ? 'M' : 'L'}${x(px).toFixed(1)},${y(Math.min(py, maxY)).toFixed(1)}`).join('');
      parts.push(`<path d="${path}" fill="none" stroke="${line.color}" stroke-width="1.5"/>`);
    }
    parts.push(`<rect x="${width - right - 120}" y="${top + 4 + index * 16}" width="10" height="10" fill="${line.color}"/><text x="${width - right - 106}" y="${top + 13 + index * 16}" font-size="11">${escapeHtml(line.name)}</text>`);
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(title)}">${parts.join('')}</svg>`;
}

function niceCeiling(value: number): number {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 2.5, 5, 10]) if (factor * magnitude >= value) return factor * magnitude;
  return 10 * magnitude;
}

function formatNumber(value: number): string {
  if (value >= 1_000_000) return `${(value / 1_000_000).toFixed(1)}M`;
  if (value >= 1_000) return `${(value / 1_000).toFixed(1)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

function formatSeconds(seconds: number): string {
  if (seconds >= 120 && seconds % 60 === 0) return `${seconds / 60}m`;
  return `${Math.round(seconds)}s`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char]!);
}
