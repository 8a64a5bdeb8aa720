/**
 * The part of the SDK that runs anywhere (Node, browsers, the simulator): the client, the
 * transport port, errors and protocol types. `index.ts` adds the Node wiring, `browser.ts` the
 * browser wiring; neither is needed by code that injects its own ports.
 */
export {
  CellmeshClient,
  openClient,
  DEFAULT_WEBSOCKET_PATH,
  type CellmeshClientOptions,
  type ClientEvents,
  type ClientSettings,
  type ConnectionState,
  type DevicesChange,
  type HistoryOptions,
  type HistoryPage,
  type PingResult,
  type MerchantPresence,
  type PresenceEntry,
  type PresenceQuery,
  type PresenceResult,
  type QueuedSend,
  type Receipt,
  type RequestOptions,
  type SendOptions,
  type SendResult,
  type SessionInfo,
  type StateChange,
  type SyncedEvent,
} from './client.js';
export { BrowserTransport, type WebSocketConstructor } from './browser-transport.js';
export { ClientError, ClientErrorCode, type ClientErrorCodeValue, type ClientErrorDetails, type LocalErrorCode } from './errors.js';
export { clientDefaults, type BackoffSettings } from './defaults.js';
export type { Listener } from './emitter.js';
export type { TokenSource } from './token.js';
export type { ClientConnection, ClientTransport, ConnectionListener, TransportErrorInfo } from './transport.js';
export {
  SUBPROTOCOL_V1,
  conversationIdOf,
  parseConversationId,
  type ChatMessage,
  type ConversationSummary,
  type DeviceInfo,
  type Limits,
  type Role,
} from '../cell/protocol/frames.js';
export { CloseCode, ErrorCode } from '../cell/protocol/errors.js';
