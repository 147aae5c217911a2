/** The library logs through this interface; it is silent unless the caller passes a logger (pino fits). */
export interface Logger {
  debug(meta: Record<string, unknown>, message: string): void;
  info(meta: Record<string, unknown>, message: string): void;
  warn(meta: Record<string, unknown>, message: string): void;
  error(meta: Record<string, unknown>, message: string): void;
}

const noop = (): void => undefined;

export const silentLogger: Logger = Object.freeze({ debug: noop, info: noop, warn: noop, error: noop });
