import { mintToken } from '../cell/access/tokens.js';
import { startCell } from '../cell/cell.js';
import { parseCellConfig } from '../cell/config.js';
import { connectNode, conversationIdOf, type CellmeshClient } from '../client/index.js';
import { createLogger } from './logger.js';
import { runUntilSignal } from './signals.js';

interface DemoCommandOptions {
  port: number;
  dataDir: string;
}

/** A fixed, published secret: the demo's tokens are for trying things out, never for production. */
const DEMO_SECRET = 'cellmesh-demo-secret-do-not-use-in-production';
const TENANT = 'mall';
const MERCHANTS = [
  { id: 'acme-shoes', name: 'ACME Shoes', agent: 'bob' },
  { id: 'bolt-bikes', name: 'Bolt Bikes', agent: 'carol' },
];
const CUSTOMERS = ['alice', 'dave'];
const TOKEN_TTL_SECONDS = 24 * 3600;

/**
 * `npm start`: one cell with a demo tenant, two merchants whose agents answer automatically, a
 * first conversation, and ready-made commands to chat as customers and agents.
 */
export async function runDemoCommand(options: DemoCommandOptions): Promise<void> {
  const config = parseCellConfig({
    cell: { id: 'demo-cell' },
    listen: { host: '127.0.0.1', port: options.port },
    store: { kind: 'level', directory: options.dataDir },
    tenants: [{ id: TENANT, secret: DEMO_SECRET, origins: [], merchants: MERCHANTS.map(({ id, name }) => ({ id, name })) }],
  });
  const logger = createLogger('warn', 'demo');
  const cell = await startCell({ config, logger, processMetrics: true });
  const url = `ws://127.0.0.1:${cell.port}`;
  const token = (user: string, device: string, merchant?: string): Promise<string> =>
    mintToken({
      secret: DEMO_SECRET,
      tenant: TENANT,
      user,
      role: merchant === undefined ? 'customer' : 'agent',
      ...(merchant === undefined ? {} : { merchant }),
      device,
      ttlSeconds: TOKEN_TTL_SECONDS,
      nowMs: Date.now(),
    });

  const bots: CellmeshClient[] = [];
  for (const merchant of MERCHANTS) {
    bots.push(await startAnsweringAgent(url, await token(merchant.agent, 'demo-bot', merchant.id), merchant.name, merchant.agent));
  }
  const opening = await connectNode({ url, token: await token('alice', 'demo-seed') });
  const firstConversation = conversationIdOf('acme-shoes', 'alice');
  await opening.send(firstConversation, 'Hello! Is the trail runner in stock in size 44?', { cmid: 'demo-opening' });
  await opening.close();

  const lines = [
    '',
    `cellmesh demo: one cell listening on ${url} (data in ${options.dataDir})`,
    `  tenant '${TENANT}'; merchants ${MERCHANTS.map((m) => `${m.id} (agent ${m.agent}, answers automatically)`).join(', ')}; customers ${CUSTOMERS.join(', ')}`,
    '',
    'Chat as alice from her phone (type a line, press enter):',
    `  npx cellmesh chat --url ${url} --conv ${firstConversation} --token ${await token('alice', 'phone')}`,
    'The same conversation on alice\'s laptop (multi-device sync):',
    `  npx cellmesh chat --url ${url} --conv ${firstConversation} --token ${await token('alice', 'laptop')}`,
    'As bob, ACME Shoes\' agent, at his desk:',
    `  npx cellmesh chat --url ${url} --conv ${firstConversation} --token ${await token('bob', 'desk', 'acme-shoes')}`,
    'As dave, asking Bolt Bikes:',
    `  npx cellmesh chat --url ${url} --conv ${conversationIdOf('bolt-bikes', 'dave')} --token ${await token('dave', 'phone')}`,
    '',
    `Health ${url.replace('ws:', 'http:')}/v1/readyz, metrics ${url.replace('ws:', 'http:')}/v1/metrics. Ctrl-C stops the cell.`,
    '',
  ];
  process.stdout.write(lines.join('\n'));
  await runUntilSignal(
    async () => {
      await Promise.all(bots.map((bot) => bot.close()));
      await cell.stop();
    },
    config.shutdownGraceSeconds * 1000,
    logger,
  );
}

/** A demo agent that answers every customer message of its merchant. */
async function startAnsweringAgent(url: string, token: string, merchantName: string, agent: string): Promise<CellmeshClient> {
  const client = await connectNode({ url, token });
  client.on('message', (message) => {
    if (message.role !== 'customer') return;
    const reply = `Hi ${message.from}, ${agent} from ${merchantName} here. About “${message.body.slice(0, 80)}”: let me check that for you.`;
    // The reply's cmid derives from the message it answers, so a redelivery never answers twice.
    client.send(message.conv, reply, { cmid: `reply-${message.seq}` }).catch(() => {});
    client.read(message.conv, message.seq).catch(() => {});
  });
  return client;
}
