/**
 * Request/response over libp2p streams: one stream per call, one length-prefixed frame each
 * way, the response's first byte a status (0 ok, 1 the handler failed, followed by its UTF-8
 * message). Both halves: the caller's request and the handler serving it.
 */
import type { IncomingStreamData, Libp2p, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from 'it-length-prefixed-stream';
import { asError, combine, Deadline, errorMessage, failure, RemoteFailure, type CallSignals } from './libp2p-calls.js';
import type { Libp2pSettings, TransportLogger } from './libp2p-settings.js';
import type { PeerId, RequestHandler, RequestOptions } from './transport.js';

/** Response status byte: the first byte of every response frame. */
const ResponseStatus = { Ok: 0, HandlerFailed: 1 } as const;

/** Longest handler error message sent back to the caller, in characters. */
const MAX_ERROR_MESSAGE_CHARS = 1_000;

function okFrame(body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(body.byteLength + 1);
  frame[0] = ResponseStatus.Ok;
  frame.set(body, 1);
  return frame;
}

function failureFrame(message: string): Uint8Array {
  const text = new TextEncoder().encode(message.slice(0, MAX_ERROR_MESSAGE_CHARS));
  const frame = new Uint8Array(text.byteLength + 1);
  frame[0] = ResponseStatus.HandlerFailed;
  frame.set(text, 1);
  return frame;
}

/** The request handlers of a libp2p node, and the requests it makes. */
export class Libp2pRequests {
  private readonly handlers = new Map<string, RequestHandler>();
  private readonly registeredProtocols = new Set<string>();

  constructor(
    private readonly node: Libp2p,
    private readonly settings: Libp2pSettings,
    private readonly logger: TransportLogger,
    /** The transport's stop signal now (a new one at every start). */
    private readonly stopSignal: () => AbortSignal,
  ) {}

  /** A later call for the same protocol replaces the handler; `running` registers it with libp2p now. */
  handle(protocol: string, handler: RequestHandler, running: boolean): void {
    this.handlers.set(protocol, handler);
    if (running) this.registerProtocol(protocol);
  }

  /** Registers every handled protocol with libp2p (at start). */
  registerAll(): void {
    for (const protocol of this.handlers.keys()) this.registerProtocol(protocol);
  }

  /** Sends one request, once `pendingWrites` (peer store writes that a dial must see) settle. */
  async request(peer: PeerId, protocol: string, data: Uint8Array, options: RequestOptions, pendingWrites: Promise<void>): Promise<Uint8Array> {
    if (data.byteLength > this.settings.maxRequestBytes) {
      throw new RangeError(`a request of ${data.byteLength} bytes exceeds maxRequestBytes (${this.settings.maxRequestBytes})`);
    }
    const requestDeadline = new Deadline(options.timeoutMs);
    const connectDeadline = new Deadline(this.settings.dialTimeoutMs);
    const signals: CallSignals = { stop: this.stopSignal(), caller: options.signal, timeout: requestDeadline.signal };
    const signal = combine(signals);
    try {
      await pendingWrites;
      // Opening the stream (connecting first if needed) is bounded by the dial timeout as well:
      // a peer that cannot be reached within it is unreachable, not slow.
      const openSignal = AbortSignal.any([signal, connectDeadline.signal]);
      const stream = await this.node.dialProtocol(peerIdFromString(peer), protocol, { signal: openSignal });
      connectDeadline.clear();
      return await this.exchange(stream, data, signal);
    } catch (error) {
      throw failure(error, signals, `request ${protocol} to ${peer}`);
    } finally {
      requestDeadline.clear();
      connectDeadline.clear();
    }
  }

  /** Registers one libp2p stream handler per protocol; it looks the current handler up per stream. */
  private registerProtocol(protocol: string): void {
    if (this.registeredProtocols.has(protocol)) return;
    this.registeredProtocols.add(protocol);
    const limit = this.settings.maxConcurrentRequestsPerPeer;
    this.node
      .handle(protocol, (incoming) => this.serve(protocol, incoming), {
        maxInboundStreams: limit,
        maxOutboundStreams: limit,
      })
      .catch((error: unknown) => this.logger.warn({ protocol, error: errorMessage(error) }, 'registering a protocol failed'));
  }

  /** Serves one inbound request stream: read one frame, run the handler, answer one frame. */
  private async serve(protocol: string, { stream, connection }: IncomingStreamData): Promise<void> {
    const from = connection.remotePeer.toString();
    const frames = lpStream(stream, { maxDataLength: this.settings.maxRequestBytes });
    const readDeadline = new Deadline(this.settings.inboundRequestReadTimeoutMs);
    const writeDeadline = new Deadline(this.settings.streamCloseTimeoutMs);
    try {
      let answer: Uint8Array;
      try {
        const readSignal = combine({ stop: this.stopSignal(), timeout: readDeadline.signal });
        const request = (await frames.read({ signal: readSignal })).slice();
        readDeadline.clear();
        answer = await this.answer(protocol, from, request);
      } catch (error) {
        if (!(error instanceof Error) || error.name !== 'InvalidDataLengthError') throw error;
        answer = failureFrame(`request larger than ${this.settings.maxRequestBytes} bytes refused`);
      }
      writeDeadline.restart();
      const writeSignal = combine({ stop: this.stopSignal(), timeout: writeDeadline.signal });
      await frames.write(answer, { signal: writeSignal });
      await stream.close({ signal: writeSignal });
    } catch (error) {
      this.logger.debug({ protocol, from, error: errorMessage(error) }, 'inbound request stream failed');
      stream.abort(asError(error));
    } finally {
      readDeadline.clear();
      writeDeadline.clear();
    }
  }

  /** Runs the handler and turns its outcome (or its failure) into a response frame. */
  private async answer(protocol: string, from: PeerId, request: Uint8Array): Promise<Uint8Array> {
    const handler = this.handlers.get(protocol);
    if (handler === undefined) return failureFrame(`no handler for ${protocol}`);
    try {
      const response = await handler(from, request);
      if (response.byteLength > this.settings.maxResponseBytes) {
        return failureFrame(`response of ${response.byteLength} bytes exceeds ${this.settings.maxResponseBytes}`);
      }
      return okFrame(response);
    } catch (error) {
      return failureFrame(errorMessage(error));
    }
  }

  /** The caller's half of a request: write one frame, read one frame back, close the stream. */
  private async exchange(stream: Stream, data: Uint8Array, signal: AbortSignal): Promise<Uint8Array> {
    const frames = lpStream(stream, { maxDataLength: this.settings.maxResponseBytes + 1 });
    try {
      await frames.write(data, { signal });
      const frame = (await frames.read({ signal })).slice();
      this.closeQuietly(stream);
      if (frame[0] === ResponseStatus.Ok) return frame.subarray(1);
      throw new RemoteFailure(new TextDecoder().decode(frame.subarray(1)));
    } catch (error) {
      if (!(error instanceof RemoteFailure)) stream.abort(asError(error));
      throw error;
    }
  }

  private closeQuietly(stream: Stream): void {
    const closeDeadline = new Deadline(this.settings.streamCloseTimeoutMs);
    stream
      .close({ signal: closeDeadline.signal })
      .catch((error: unknown) => stream.abort(asError(error)))
      .finally(() => closeDeadline.clear());
  }
}
