import { CellError, ErrorCode } from './errors.js';
import { clientFrameSchemas, type ClientFrame, type ClientOp } from './frames.js';
import { hotFrameDecoders } from './hot-frames.js';

/** Parses and validates one client frame, with a stable error code for each way it can fail. */
export function parseClientFrame(text: string): ClientFrame {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new CellError(ErrorCode.BadJson, 'the frame is not valid JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CellError(ErrorCode.BadFrame, 'a frame must be a JSON object');
  }
  const op = (raw as { op?: unknown }).op;
  if (typeof op !== 'string') throw new CellError(ErrorCode.BadFrame, 'the frame has no string field `op`');
  if (!Object.hasOwn(clientFrameSchemas, op)) {
    throw new CellError(ErrorCode.UnknownOp, `unknown op '${op.slice(0, 32)}'; known: ${Object.keys(clientFrameSchemas).join(', ')}`);
  }
  // The frames of every message take the hand-checked path; anything it does not accept, the schema judges.
  const hot = hotFrameDecoders.get(op)?.(raw as Record<string, unknown>);
  if (hot !== undefined) return hot;
  const result = clientFrameSchemas[op as ClientOp].safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? `\`${issue.path.join('.')}\`` : 'the frame';
    throw new CellError(ErrorCode.BadFrame, `${op}: ${where} ${issue?.message ?? 'is invalid'}`);
  }
  return result.data as ClientFrame;
}

/** Best effort: the request id of a frame that failed, so the error can be matched to it. */
export function requestIdOf(text: string): string | undefined {
  try {
    const id = (JSON.parse(text) as { id?: unknown }).id;
    return typeof id === 'string' && id.length <= 64 ? id : undefined;
  } catch {
    return undefined;
  }
}
