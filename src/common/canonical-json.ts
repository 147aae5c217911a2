/**
 * JSON text of a value with every object's keys in sorted order (and undefined members left out,
 * as JSON.stringify does), so that two values equal as data have equal text whatever the order
 * their keys were written in. Arrays keep their order: it is part of their meaning.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== 'object') return value;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) sorted[key] = sortKeys((value as Record<string, unknown>)[key]);
  return sorted;
}
