/**
 * The publish/subscribe half of the libp2p transport: MeshTransport topics on gossipsub, each
 * with its handler and validator.
 */
import type { GossipsubEvents } from '@chainsafe/libp2p-gossipsub';
import { TopicValidatorResult, type Message, type PubSub } from '@libp2p/interface';
import { errorMessage } from './libp2p-calls.js';
import type { Libp2pSettings, TransportLogger } from './libp2p-settings.js';
import type { MeshMessage, MessageHandler, MessageValidator, ValidationResult } from './transport.js';

interface Subscription {
  readonly handler: MessageHandler;
  readonly validator: MessageValidator | undefined;
}

/** The topics a transport subscribes, kept across restarts of the node. */
export class Libp2pGossip {
  private readonly subscriptions = new Map<string, Subscription>();

  constructor(
    private readonly pubsub: PubSub<GossipsubEvents>,
    private readonly settings: Libp2pSettings,
    private readonly logger: TransportLogger,
    private readonly isRunning: () => boolean,
  ) {
    pubsub.addEventListener('message', (event) => this.deliver(event.detail));
  }

  /** A later call for the same topic replaces the handler and the validator. */
  subscribe(topic: string, handler: MessageHandler, validator?: MessageValidator): void {
    this.subscriptions.set(topic, { handler, validator });
    const validators = this.pubsub.topicValidators;
    if (validator === undefined) validators.delete(topic);
    else validators.set(topic, (_relayer, message) => this.validate(validator, message));
    if (this.isRunning()) this.pubsub.subscribe(topic);
  }

  unsubscribe(topic: string): void {
    this.subscriptions.delete(topic);
    this.pubsub.topicValidators.delete(topic);
    if (this.isRunning()) this.pubsub.unsubscribe(topic);
  }

  /** Subscribes every topic with gossipsub (at start). */
  subscribeAll(): void {
    for (const topic of this.subscriptions.keys()) this.pubsub.subscribe(topic);
  }

  /** Copies `data`, so the caller may reuse its buffer once the call returns. */
  async publish(topic: string, data: Uint8Array): Promise<void> {
    if (data.byteLength > this.settings.maxPublishBytes) {
      throw new RangeError(`a message of ${data.byteLength} bytes exceeds maxPublishBytes (${this.settings.maxPublishBytes})`);
    }
    await this.pubsub.publish(topic, data.slice());
  }

  /** Runs the topic's validator on a received message; a throwing validator ignores the message. */
  private validate(validator: MessageValidator, message: Message): TopicValidatorResult {
    if (message.type !== 'signed') return TopicValidatorResult.Reject;
    let result: ValidationResult;
    try {
      result = validator({ from: message.from.toString(), topic: message.topic, data: message.data });
    } catch (error) {
      this.logger.warn({ topic: message.topic, error: errorMessage(error) }, 'topic validator threw; message ignored');
      return TopicValidatorResult.Ignore;
    }
    if (result === 'accept') return TopicValidatorResult.Accept;
    if (result === 'reject') return TopicValidatorResult.Reject;
    return TopicValidatorResult.Ignore;
  }

  /** Hands a received message to its topic's handler, with a buffer of the handler's own. */
  private deliver(message: Message): void {
    if (message.type !== 'signed') return;
    const subscription = this.subscriptions.get(message.topic);
    if (subscription === undefined) return;
    const meshMessage: MeshMessage = { from: message.from.toString(), topic: message.topic, data: message.data.slice() };
    try {
      subscription.handler(meshMessage);
    } catch (error) {
      this.logger.warn({ topic: message.topic, error: errorMessage(error) }, 'message handler threw');
    }
  }
}
