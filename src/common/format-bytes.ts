/**
 * A size for people to read, in binary units: `512 B`, `1.5 KiB`, `256 MiB`, `2 GiB` (one decimal,
 * none when it is zero). The CLI's tables and the agent's refusals print sizes the same way.
 * (Its inverse for input is `parseBytes` in units.ts.)
 */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1).replace(/\.0$/, '')} ${units[unit]}`;
}
