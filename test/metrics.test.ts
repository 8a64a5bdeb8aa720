/**
 * Health, readiness and Prometheus metrics: the endpoints answer, and the cell's series move
 * as traffic does (exact deltas where the count is known).
 */
import { afterEach, expect, test } from 'vitest';
import { metricValue } from '../platform/prometheus-text.js';
import { Cleanup, eventually, expectUpgradeRejected, fetchMetrics, httpRequest, sendMessage, tokenFor } from './harness.js';

const cleanup = new Cleanup();
afterEach(() => cleanup.run());

const CONV = 'm1:c1';

test('healthz and readyz answer; metrics are Prometheus text', async () => {
  const cell = await cleanup.cell();
  const health = await httpRequest('GET', `${cell.httpUrl}/v1/healthz`);
  expect(health).toMatchObject({ status: 200, body: { status: 'ok' } });
  const ready = await httpRequest('GET', `${cell.httpUrl}/v1/readyz`);
  expect(ready).toMatchObject({ status: 200, body: { status: 'ready' } });
  const response = await fetch(`${cell.httpUrl}/v1/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
  const text = await response.text();
  for (const name of [
    'cellmesh_connections',
    'cellmesh_messages_in_total',
    'cellmesh_messages_out_total',
    'cellmesh_ack_latency_seconds',
    'cellmesh_store_write_seconds',
    'cellmesh_errors_total',
  ]) {
    expect(text, name).toContain(`# TYPE ${name} `);
  }
  expect(text).toContain('# TYPE cellmesh_ack_latency_seconds histogram');
  expect(text).toContain('# TYPE cellmesh_connections gauge');
  // No auth needed for the operator endpoints, and a fresh cell counts nothing yet.
  expect(metricValue(text, 'cellmesh_connections')).toBe(0);
  expect(metricValue(text, 'cellmesh_messages_in_total')).toBe(0);
  expect(metricValue(text, 'cellmesh_ack_latency_seconds_count')).toBe(0);
});

test('the series move with traffic', async () => {
  const cell = await cleanup.cell();
  const metrics = async (): Promise<string> => fetchMetrics(cell.httpUrl);
  const phone = await cleanup.client(cell.url, await tokenFor({ user: 'c1', device: 'phone' }));
  const agent = await cleanup.client(cell.url, await tokenFor({ user: 'a1', merchant: 'm1', device: 'desk' }));
  agent.autoAck();
  let text = await metrics();
  expect(metricValue(text, 'cellmesh_connections')).toBe(2);
  expect(metricValue(text, 'cellmesh_connections_opened_total')).toBe(2);

  // 10 fresh sends over WebSocket, 2 resends, 3 over HTTP.
  for (let index = 1; index <= 10; index++) await sendMessage(phone, CONV, `m${index}`, `body ${index}`);
  await sendMessage(phone, CONV, 'm1', 'body 1', 'resend-1');
  await sendMessage(phone, CONV, 'm2', 'body 2', 'resend-2');
  const webToken = await tokenFor({ user: 'c1', device: 'web' });
  for (let index = 11; index <= 13; index++) {
    const answer = await httpRequest('POST', `${cell.httpUrl}/v1/conversations/${CONV}/messages`, { token: webToken, json: { cmid: `m${index}`, body: `body ${index}` } });
    expect(answer.status).toBe(201);
  }
  await agent.until(() => agent.messages(CONV).length === 13);
  await phone.until(() => phone.messages(CONV).length === 3);

  text = await metrics();
  expect(metricValue(text, 'cellmesh_messages_in_total')).toBe(13);
  expect(metricValue(text, 'cellmesh_duplicate_sends_total')).toBe(2);
  // Pushed as msg: 13 to the agent, and the 3 HTTP ones to the phone (its own 10 came as `sent`).
  expect(metricValue(text, 'cellmesh_messages_out_total')).toBe(16);
  // One ack latency per fresh WebSocket send.
  expect(metricValue(text, 'cellmesh_ack_latency_seconds_count')).toBe(10);
  expect(metricValue(text, 'cellmesh_ack_latency_seconds_sum')).toBeGreaterThan(0);
  expect(metricValue(text, 'cellmesh_ack_latency_seconds_bucket', { le: '+Inf' })).toBe(10);
  const storeWrites = metricValue(text, 'cellmesh_store_write_seconds_count') ?? 0;
  expect(storeWrites).toBeGreaterThanOrEqual(1);
  expect(metricValue(text, 'cellmesh_frames_in_total', { op: 'send' })).toBe(12);

  // Errors by code: exact counts.
  for (let index = 0; index < 3; index++) phone.send('{oops');
  const unknown = await phone.request({ id: 'u', op: 'nope' });
  expect(unknown).toMatchObject({ code: 'UNKNOWN_OP' });
  await phone.until(() => phone.all('error').length === 4);
  const forbidden = await httpRequest('GET', `${cell.httpUrl}/v1/conversations/m1:c2/messages`, { token: webToken });
  expect(forbidden.status).toBe(403);
  text = await metrics();
  expect(metricValue(text, 'cellmesh_errors_total', { code: 'BAD_JSON' })).toBe(3);
  expect(metricValue(text, 'cellmesh_errors_total', { code: 'UNKNOWN_OP' })).toBe(1);
  expect(metricValue(text, 'cellmesh_errors_total', { code: 'CONVERSATION_FORBIDDEN' })).toBe(1);

  // A read receipt (the agent's: the customer already read up to its own last message), and a store write for it.
  await agent.request({ id: 'r', op: 'read', conv: CONV, seq: 13 });
  text = await metrics();
  expect(metricValue(text, 'cellmesh_read_receipts_total')).toBe(1);
  expect(metricValue(text, 'cellmesh_store_write_seconds_count')).toBeGreaterThan(storeWrites);

  // A refused upgrade and a closed connection.
  const refused = await expectUpgradeRejected(cell.url, 'garbage');
  expect(refused.code).toBe('TOKEN_INVALID');
  await agent.close();
  await eventually(async () => metricValue(await metrics(), 'cellmesh_connections') === 1, 'the connections gauge to drop to 1');
  text = await metrics();
  expect(metricValue(text, 'cellmesh_upgrades_rejected_total', { code: 'TOKEN_INVALID' })).toBe(1);
  expect(metricValue(text, 'cellmesh_connections_opened_total')).toBe(2);
});
