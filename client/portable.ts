/**
 * The part of the SDK that runs anywhere (Node, browsers, the simulator): the client, the
 * transport port, errors and protocol types. `index.ts` adds the Node wiring, `browser.ts` the
 * browser wiring; neither is needed by code that injects its own ports.
 */
export { CellmeshClient, openClient } from './client.js';
export { DEFAULT_WEBSOCKET_PATH, type DownHome, type RouteOptions } from './endpoints.js';
export type { CellmeshClientOptions, ClientSettings } from './settings.js';
export type {
  ClientEvents,
  ConnectionState,
  DeskView,
  DevicesChange,
  HistoryOptions,
  HistoryPage,
  PingResult,
  MerchantPresence,
  PresenceEntry,
  PresenceQuery,
  PresenceResult,
  QueuedSend,
  Receipt,
  DeliveryReceipt,
  RequestOptions,
  SendOptions,
  SendResult,
  SessionInfo,
  StateChange,
  SyncedEvent,
  TransferTarget,
  TypingEvent,
} from './client-types.js';
export { BrowserTransport, type WebSocketConstructor } from './browser-transport.js';
export { ClientError, ClientErrorCode, type ClientErrorCodeValue, type ClientErrorDetails, type LocalErrorCode } from './errors.js';
export { clientDefaults, type BackoffSettings } from './defaults.js';
export type { Listener } from './emitter.js';
export type { TokenSource } from './token.js';
export type { FetchLike } from './attachment-upload.js';
export { loginTokenSource, type AgentLoginOptions, type AgentTokenSource } from './agent-login.js';
export { guestStorageKey, guestTokenSource, type GuestStorage, type GuestTokenOptions } from './guest-token.js';
export type { ClientConnection, ClientTransport, ConnectionListener, TransportErrorInfo } from './transport.js';
export {
  SUBPROTOCOL_V1,
  conversationIdOf,
  parseConversationId,
  type AgentStatus,
  type ChatMessage,
  type ConsultationView,
  type ConversationSummary,
  type DeskNotice,
  type DeviceInfo,
  type Limits,
  type MerchantHome,
  type MessageAttachment,
  type Role,
} from '../cell/protocol/frames.js';
export { CloseCode, ErrorCode } from '../cell/protocol/errors.js';
