// The agent workbench (/app/agent.html[?tenant=…&merchant=…]): an agent logs in with its
// password (POST /v1/login at the merchant's home cell; no secret reaches the page), then serves
// its consultations through the browser SDK (docs/web.md).
import { byId } from '../shared/dom.js';
import { DeskSession } from './desk-session.js';
import { DeskView } from './desk-view.js';

const query = new URLSearchParams(window.location.search);
for (const name of ['tenant', 'merchant', 'agent']) {
  const value = query.get(name);
  if (value !== null) byId<HTMLInputElement>(name).value = value;
}
// One device per tab, kept across reloads of that tab: two tabs of one agent are two devices,
// and both get every message of its consultations.
const DEVICE_KEY = 'cellmesh.desk.device';
const device = window.sessionStorage.getItem(DEVICE_KEY) ?? `desk-${window.crypto.randomUUID().slice(0, 8)}`;
window.sessionStorage.setItem(DEVICE_KEY, device);

const session = new DeskSession(window.location.origin, device);
new DeskView(session);
