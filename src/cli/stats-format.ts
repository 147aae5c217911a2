import type { StatsSample } from '../engine/types.js';
import { statsRecord, type StatsRecord } from '../tasks/stats-figures.js';
import { renderTable } from './output.js';

export { cpuPercent, memoryPercent, statsRecord, type StatsRecord } from '../tasks/stats-figures.js';

/**
 * What `berth stats` computes and prints from the engine's samples, as `docker stats` does: CPU %
 * from the cpu/system deltas, memory %, and sizes in go-units' words ("1.953MiB", "1.23kB").
 * Pure functions of their input, so they are tested without an engine or a terminal.
 */

/** The columns of `berth stats`: docker stats' own, with the task id in place of container id and name. */
export const STATS_HEADERS: readonly string[] = Object.freeze(['TASK ID', 'CPU %', 'MEM USAGE / LIMIT', 'MEM %', 'NET I/O', 'BLOCK I/O', 'PIDS']);

/** What is printed in every column but the task id before a task's first sample arrives, as docker does. */
const NO_VALUE = '--';

/**
 * The decimal digits of a non-negative finite value rounded to `count` significant digits, and the
 * power of ten of the first one. Rounds half to even on exact ties (1.125 → "112"), as Go's strconv
 * does, where JavaScript's toPrecision rounds half up ("113").
 */
function roundSignificant(value: number, count: number): { digits: string; exponent: number } {
  // 100 significant digits hold every digit of the values printed here exactly (they have at most ~60).
  const [mantissa = '0', exponentText = '0'] = value.toExponential(99).split('e');
  const all = mantissa.replace('.', '');
  let exponent = Number(exponentText);
  const head = all.slice(0, count);
  const next = all.charAt(count);
  const beyond = all.slice(count + 1);
  const lastKept = Number(head.charAt(count - 1));
  const roundsUp = next > '5' || (next === '5' && (/[1-9]/.test(beyond) || lastKept % 2 === 1));
  if (!roundsUp) return { digits: head, exponent };
  let carried = (BigInt(head) + 1n).toString();
  if (carried.length > count) {
    // 999 → 1000: one more power of ten, still `count` digits.
    carried = carried.slice(0, count);
    exponent++;
  }
  return { digits: carried.padStart(count, '0'), exponent };
}

/**
 * Go's `%.<precision>g` (shortest of %e and %f at that many significant digits, trailing zeros
 * removed), which go-units uses for every size docker prints: 1.5 → "1.5", 999.6 at 3 → "1e+03".
 */
export function formatGoG(value: number, precision: number): string {
  if (value === 0 || !Number.isFinite(value)) return String(value);
  const sign = value < 0 ? '-' : '';
  const { digits, exponent } = roundSignificant(Math.abs(value), precision);
  const significant = digits.replace(/0+$/, '') || '0';
  if (exponent < -4 || exponent >= precision) {
    const mantissa = significant.length > 1 ? `${significant[0]}.${significant.slice(1)}` : significant;
    return `${sign}${mantissa}e${exponent < 0 ? '-' : '+'}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (exponent < 0) return `${sign}0.${'0'.repeat(-exponent - 1)}${significant}`;
  const whole = significant.slice(0, exponent + 1).padEnd(exponent + 1, '0');
  const fraction = significant.slice(exponent + 1);
  return `${sign}${whole}${fraction === '' ? '' : `.${fraction}`}`;
}

/** Go's `%.2f`: JavaScript's toFixed, but half to even on exact ties (0.125 → "0.12"), as Go rounds. */
export function formatPercent(percent: number): string {
  const fixed = percent.toFixed(2);
  // toFixed(100) is the value's exact expansion for the magnitudes printed here.
  const exact = percent.toFixed(100).replace(/0+$/, '');
  const fraction = exact.split('.')[1] ?? '';
  const isTie = fraction.length === 3 && fraction.endsWith('5');
  const lastKept = Number(fraction.charAt(1));
  return `${isTie && lastKept % 2 === 0 ? exact.slice(0, -1) : fixed}%`;
}

const DECIMAL_UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
const BINARY_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB', 'ZiB', 'YiB'];

function customSize(bytes: number, base: number, units: readonly string[], precision: number): string {
  let size = bytes;
  let unit = 0;
  while (size >= base && unit < units.length - 1) {
    size /= base;
    unit++;
  }
  return `${formatGoG(size, precision)}${units[unit]}`;
}

/** Decimal units at 3 significant digits, as docker prints NET I/O and BLOCK I/O (go-units HumanSizeWithPrecision): "1.23kB", "0B". */
export function humanSize(bytes: number): string {
  return customSize(bytes, 1000, DECIMAL_UNITS, 3);
}

/** Binary units at 4 significant digits, as docker prints MEM USAGE / LIMIT (go-units BytesSize): "1.953MiB", "64MiB". */
export function binarySize(bytes: number): string {
  return customSize(bytes, 1024, BINARY_UNITS, 4);
}

/** A task's row: its id and docker stats' columns for one sample, or "--" before its first sample. */
export function statsCells(taskId: string, sample: StatsSample | undefined): string[] {
  return recordCells(taskId, sample === undefined ? undefined : statsRecord(taskId, '', sample));
}

/** A task's row from a sample as a record (what the agent's stats stream sends), or "--" before its first. */
export function recordCells(taskId: string, record: StatsRecord | undefined): string[] {
  if (record === undefined) return [taskId, ...STATS_HEADERS.slice(1).map(() => NO_VALUE)];
  return [
    taskId,
    formatPercent(record.cpuPercent),
    `${binarySize(record.memoryBytes)} / ${binarySize(record.memoryLimitBytes)}`,
    formatPercent(record.memoryPercent),
    `${humanSize(record.networkRxBytes)} / ${humanSize(record.networkTxBytes)}`,
    `${humanSize(record.blockReadBytes)} / ${humanSize(record.blockWriteBytes)}`,
    String(record.pids),
  ];
}

/** The table of every task's latest sample, in the order given (`--no-stream`, and each redraw on a terminal). */
export function renderStatsTable(rows: ReadonlyArray<{ taskId: string; sample: StatsSample | undefined }>): string {
  return renderTable(STATS_HEADERS, rows.map((row) => statsCells(row.taskId, row.sample)));
}

/**
 * One redraw of the table on a terminal, as docker stats draws it: cursor home, each line followed
 * by erase-to-end-of-line (a shorter line must not leave the end of the longer one it overwrites),
 * then erase below (a table that lost rows must not leave the old ones).
 */
export function redrawFrame(table: string): string {
  const lines = table.endsWith('\n') ? table.slice(0, -1).split('\n') : table.split('\n');
  return `\x1b[H${lines.map((line) => `${line}\x1b[K\n`).join('')}\x1b[J`;
}

/** Columns are separated by at least this many spaces, as in every berth and docker table. */
const COLUMN_GAP = 3;

/**
 * Column widths for printing samples as they come, one line each, under a header printed once:
 * wide enough for the longest task id and for the usual cells (a longer cell pushes the rest of
 * its line right rather than being cut).
 */
export function statsLineWidths(taskIds: readonly string[]): number[] {
  const typical = [0, '100.00%'.length, '1023MiB / 1023MiB'.length, '100.00%'.length, '999kB / 999kB'.length, '999MB / 999MB'.length];
  return STATS_HEADERS.map((header, column) => Math.max(header.length, column === 0 ? Math.max(0, ...taskIds.map((id) => id.length)) : (typical[column] ?? 0)));
}

/** One line of cells at fixed widths; the last column is not padded, so no line ends in spaces. */
export function formatStatsLine(cells: readonly string[], widths: readonly number[]): string {
  return `${cells.map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd((widths[column] ?? 0) + COLUMN_GAP))).join('').trimEnd()}\n`;
}
