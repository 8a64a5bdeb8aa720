// An example of the browser SDK on a merchant's own page, in plain JavaScript: the SDK is one ES
// module (`cellmesh.js`, built from client/browser.ts), imported like any other. This page is
// served by the cells as /app/example.html?tenant=…&merchant=… to show it working; on a
// merchant's site, copy cellmesh.js next to the page and put the cell's (or a router's) address
// in `cell` below. A guest token comes from POST /v1/guest; no secret is in the page.
import { BrowserClock, BrowserTransport, CellmeshClient, CryptoRandom, conversationIdOf, guestTokenSource } from './cellmesh.js';

const query = new URLSearchParams(window.location.search);
const tenant = query.get('tenant') ?? 'mall';
const merchant = query.get('merchant') ?? 'acme-shoes';
// Where the merchant's home cell is asked for: here, the cell that served this page.
const cell = window.location.origin;

const list = document.getElementById('messages');
const state = document.getElementById('state');
const show = (message) => {
  const item = document.createElement('li');
  item.className = message.role === 'customer' ? 'msg mine' : message.role === 'system' ? 'msg system' : 'msg theirs';
  item.dataset.seq = String(message.seq);
  item.textContent = message.body;
  list.appendChild(item);
};

// Route mode follows the merchant's home cell in a cluster; a cell running alone is used as it is.
const route = await fetch(`${cell}/v1/route?tenant=${tenant}&merchant=${merchant}`);
const where = route.ok ? { route: { url: cell, tenant, merchant } } : { url: `${cell.replace(/^http/, 'ws')}/v1/ws` };
const client = new CellmeshClient({
  ...where,
  token: guestTokenSource({ url: cell, tenant, merchant, storage: window.localStorage }),
  transport: new BrowserTransport(),
  clock: new BrowserClock(),
  random: new CryptoRandom(),
});
client.on('state', (change) => (state.textContent = change.state === 'open' ? 'Connected' : change.state));
let conv;
client.on('message', (message) => {
  if (message.conv === conv) show(message);
});
const session = await client.connect();
conv = conversationIdOf(merchant, session.user);
for (const message of (await client.history(conv)).messages) show(message);

document.getElementById('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = document.getElementById('text');
  if (text.value.trim() !== '') void client.send(conv, text.value.trim());
  text.value = '';
});
