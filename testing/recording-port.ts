import type { DevicePort } from '../cell/messaging/device.js';
import type { ServerFrame } from '../cell/protocol/frames.js';

/** A device port that records the frames a core sends it, as the simulator's does. */
export class RecordingPort implements DevicePort {
  readonly frames: ServerFrame[] = [];
  closed: { code: number; reason: string } | undefined;
  onClose: (() => void) | undefined;

  send(text: string): void {
    if (this.closed === undefined) this.frames.push(JSON.parse(text) as ServerFrame);
  }

  bufferedBytes(): number {
    return 0;
  }

  close(code: number, reason: string): void {
    if (this.closed !== undefined) return;
    this.closed = { code, reason };
    this.onClose?.();
  }

  of<T extends ServerFrame['t']>(type: T): Array<Extract<ServerFrame, { t: T }>> {
    return this.frames.filter((frame): frame is Extract<ServerFrame, { t: T }> => frame.t === type);
  }
}
