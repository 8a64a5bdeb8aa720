import { DEMO_ADMIN_TOKEN, DEMO_AGENT_PASSWORD, DEMO_TENANT, type DemoAgent, type DemoMerchant } from './demo-cluster.js';

/**
 * The demo's people, created as an operator would: through the admin API of the merchant's home
 * cell (docs/protocol.md, "HTTP API"), each with a password for its logins. An agent kept from an
 * earlier run of the demo (the cells' data persists) is brought back to the demo's plan.
 */
export async function createDemoAgents(cellHttpUrl: string, merchant: DemoMerchant, botPassword: string): Promise<void> {
  await putAgent(cellHttpUrl, merchant.id, merchant.bot, botPassword);
  for (const person of merchant.people) await putAgent(cellHttpUrl, merchant.id, person, DEMO_AGENT_PASSWORD);
}

async function putAgent(cellHttpUrl: string, merchant: string, agent: DemoAgent, password: string): Promise<void> {
  const agents = `${cellHttpUrl}/v1/admin/tenants/${DEMO_TENANT}/merchants/${merchant}/agents`;
  const fields = { name: agent.name, capacity: agent.capacity, groups: [...agent.groups] };
  const created = await adminCall('POST', agents, { id: agent.id, ...fields });
  if (created.status === 409) await expectOk(adminCall('PATCH', `${agents}/${agent.id}`, fields), `update agent ${agent.id} of ${merchant}`);
  else expectOkAnswer(created, `create agent ${agent.id} of ${merchant}`);
  await expectOk(adminCall('PUT', `${agents}/${agent.id}/password`, { password }), `set the password of agent ${agent.id} of ${merchant}`);
}

interface AdminAnswer {
  status: number;
  text: string;
}

async function adminCall(method: string, url: string, body: unknown): Promise<AdminAnswer> {
  const response = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${DEMO_ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, text: await response.text() };
}

async function expectOk(answer: Promise<AdminAnswer>, what: string): Promise<void> {
  expectOkAnswer(await answer, what);
}

function expectOkAnswer(answer: AdminAnswer, what: string): void {
  if (answer.status >= 300) throw new Error(`could not ${what}: HTTP ${answer.status} ${answer.text}`);
}
