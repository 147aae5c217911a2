import { ValidationError } from '../common/errors.js';

/**
 * The wire format of the agent's interactive streams (exec and attach over a WebSocket), shared by
 * the server and the client. Data travels in binary messages: one byte naming the stream, then the
 * bytes, as the engine's own multiplexed streams do, so output is never re-encoded. Control travels
 * in text messages, one JSON object each:
 *
 * - client to agent: `{ "type": "resize", "rows": R, "cols": C }`, `{ "type": "close-stdin" }`;
 * - agent to client: `{ "type": "started", ... }` once the process runs, then `{ "type": "exit",
 *   "exitCode": N }` (or `{ "type": "error", "error": { "code", "message" } }`) as the last message
 *   before the agent closes the socket.
 */

export const STREAM_IDS = Object.freeze({ stdin: 0, stdout: 1, stderr: 2 });
export type StreamName = keyof typeof STREAM_IDS;

const NAMES: readonly StreamName[] = ['stdin', 'stdout', 'stderr'];

export type ClientControl = { type: 'resize'; rows: number; cols: number } | { type: 'close-stdin' };

export type AgentControl =
  | { type: 'started'; [detail: string]: unknown }
  | { type: 'exit'; exitCode: number; [detail: string]: unknown }
  | { type: 'error'; error: { code: string; message: string } };

/** A binary message carrying `data` of `stream`. */
export function encodeData(stream: StreamName, data: Uint8Array): Buffer {
  const frame = Buffer.allocUnsafe(data.length + 1);
  frame[0] = STREAM_IDS[stream];
  frame.set(data, 1);
  return frame;
}

/** The stream and bytes of a binary message; undefined for an empty or unknown one (ignored, as a forward-compatible peer should). */
export function decodeData(frame: Buffer): { stream: StreamName; data: Buffer } | undefined {
  const stream = NAMES[frame[0] ?? -1];
  if (stream === undefined || frame.length === 0) return undefined;
  return { stream, data: frame.subarray(1) };
}

/** The largest terminal side the agent passes on (the engine takes 16-bit sizes). */
const MAX_TERMINAL_SIDE = 65_535;

/** A client's control message, checked; a ValidationError names what is wrong with it. */
export function parseClientControl(text: string): ClientControl {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ValidationError([{ field: 'message', rule: 'a text message must be a JSON object' }]);
  }
  const message = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (message.type === 'close-stdin') return { type: 'close-stdin' };
  if (message.type === 'resize') {
    const side = (field: 'rows' | 'cols'): number => {
      const n = message[field];
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_TERMINAL_SIDE) {
        throw new ValidationError([{ field, rule: `must be an integer from 1 to ${MAX_TERMINAL_SIDE}` }]);
      }
      return n;
    };
    return { type: 'resize', rows: side('rows'), cols: side('cols') };
  }
  throw new ValidationError([{ field: 'type', rule: 'must be resize or close-stdin' }]);
}

/** An agent's control message; undefined for one this client does not know (ignored). */
export function parseAgentControl(text: string): AgentControl | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const message = value as Record<string, unknown>;
  if (message.type === 'started') return message as AgentControl;
  if (message.type === 'exit' && typeof message.exitCode === 'number') return message as AgentControl;
  if (message.type === 'error' && typeof message.error === 'object' && message.error !== null) return message as AgentControl;
  return undefined;
}
