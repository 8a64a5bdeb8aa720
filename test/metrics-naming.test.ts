/**
 * `/v1/metrics` of a real cell process (process metrics and the mesh on, so every family a
 * production cell exposes is there) keeps Prometheus' naming rules: checked by our own rules
 * always, and by `promtool check metrics` where it is installed (Debian's `prometheus`
 * package; .ci/run installs it), reported as skipped with the reason where it is not.
 */
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { namingProblems } from '../platform/prometheus-text.js';
import { Cleanup, fetchMetrics, startChildCell } from './harness.js';

const cleanup = new Cleanup();
let exposition = '';

beforeAll(async () => {
  const directory = await cleanup.tempDir();
  const cell = await startChildCell({ directory, configDir: directory, mesh: {} });
  cleanup.add(async () => {
    cell.kill('SIGTERM');
    await cell.exited;
  });
  exposition = await fetchMetrics(cell.httpUrl);
}, 90_000);
afterAll(() => cleanup.run());

test('a live cell exposes process, cell and mesh metrics that keep the naming rules', () => {
  // The families the rules must cover are really there (a check of nothing would pass).
  for (const family of ['process_cpu_seconds_total', 'nodejs_active_handles', 'nodejs_eventloop_lag_seconds', 'cellmesh_ack_latency_seconds', 'cellmesh_connections', 'cellmesh_mesh_probes_total', 'cellmesh_outbox_waiting_entries', 'cellmesh_closure_messages_total', 'cellmesh_closure_conversations_total', 'cellmesh_closure_crossed_conversations_total', 'cellmesh_ready', 'cellmesh_event_loop_stalls_total', 'cellmesh_drain_merchants']) {
    expect(exposition, family).toMatch(new RegExp(`^# TYPE ${family} `, 'm'));
  }
  expect(namingProblems(exposition)).toEqual([]);
});

test('the naming rules catch each kind of breach', () => {
  const bad = [
    '# HELP a_active_total Gauge with a counter suffix.',
    '# TYPE a_active_total gauge',
    'a_active_total 1',
    '# HELP a_requests Counter without _total.',
    '# TYPE a_requests counter',
    'a_requests 1',
    '# HELP a_latency_milliseconds Not a base unit.',
    '# TYPE a_latency_milliseconds histogram',
    'a_latency_milliseconds_bucket{le="+Inf"} 1',
    'a_latency_milliseconds_sum 1',
    'a_latency_milliseconds_count 1',
    'a_latency_milliseconds_bucket{code="x"} 1',
    '# TYPE a_size_bytes gauge',
    'a_size_bytes{Mode="x"} 1',
    'a_size_bytes{Mode="x"} 2',
    'a_orphan 3',
  ].join('\n');
  expect(namingProblems(bad)).toEqual([
    "a_latency_milliseconds_bucket: bucket without 'le'",
    "a_size_bytes: label 'Mode' is not snake_case or is reserved",
    'a_size_bytes{Mode="x"}: sample given twice',
    "a_size_bytes: label 'Mode' is not snake_case or is reserved",
    'a_orphan: sample of no declared family',
    'a_active_total: a gauge whose name ends in _total',
    'a_requests: a counter whose name does not end in _total',
    "a_latency_milliseconds: 'milliseconds' is not a base unit (use seconds, bytes, ratios)",
    'a_size_bytes: 0 HELP lines',
  ]);
});

const promtoolMissing = spawnSync('promtool', ['--version']).error === undefined ? undefined : 'promtool is not installed (apt-get install prometheus)';
if (promtoolMissing !== undefined) console.warn(`metrics-naming.test.ts: promtool check skipped: ${promtoolMissing}`);

describe.skipIf(promtoolMissing !== undefined)(`promtool${promtoolMissing === undefined ? '' : ` (skipped: ${promtoolMissing})`}`, () => {
  test('promtool check metrics finds nothing to say about a live cell', () => {
    const result = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8', timeout: 30_000 });
    expect({ status: result.status, output: `${result.stdout}${result.stderr}` }).toEqual({ status: 0, output: '' });
  });
});
