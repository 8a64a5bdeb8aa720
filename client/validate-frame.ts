// Checks a frame the client is about to send against the protocol's own schema, so that bad
// input from the application fails at the call with BAD_FRAME instead of at the cell.
import { clientFrameSchemas, type ClientFrame } from '../cell/protocol/frames.js';
import { ErrorCode } from '../cell/protocol/errors.js';
import { ClientError } from './errors.js';

/** The BAD_FRAME error `frame` would earn, or undefined when it is valid. */
export function invalidFrame(frame: ClientFrame): ClientError | undefined {
  const schema: { safeParse(data: unknown): { success: boolean; error?: { issues: Array<{ path: PropertyKey[]; message: string }> } } } =
    clientFrameSchemas[frame.op];
  const result = schema.safeParse(frame);
  if (result.success) return undefined;
  const issue = result.error?.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? frame.op : issue.path.map(String).join('.');
  return new ClientError(ErrorCode.BadFrame, `invalid ${frame.op}: ${where}: ${issue?.message ?? 'rejected'}`);
}
