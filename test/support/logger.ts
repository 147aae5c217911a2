/** A logger that keeps every line, for tests that check what berth logged (an adoption, a warning counted once). */
import type { Logger } from '../../src/common/logger.js';

export interface LogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  meta: Record<string, unknown>;
  message: string;
}

/** A logger that keeps every line, for counting and finding lines. */
export function recordingLogger(): Logger & { lines: LogLine[]; count(level: LogLine['level']): number } {
  const lines: LogLine[] = [];
  const at = (level: LogLine['level']) => (meta: Record<string, unknown>, message: string) => void lines.push({ level, meta, message });
  return {
    lines,
    count: (level) => lines.filter((l) => l.level === level).length,
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  };
}
