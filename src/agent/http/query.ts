import type { JsonSchema } from './schemas.js';

/**
 * A query string's values as its schema types them. The API's validator coerces nothing (a JSON
 * body's `"id": 5` is refused, not turned into `"5"`), but a query string is text by nature, so
 * its values are read here, before validation, and only from text that is exactly such a value:
 * an integer from `-?(0|[1-9][0-9]*)`, a boolean from `true` or `false`, an array from one or
 * more repeated parameters. Anything else is left as it came, for the schema to refuse and name
 * (`limit: must be integer`), never guessed at (`0x10`, ` 5`, `1e3`, `5.0` and `yes` stay text).
 */
export function typedQuery(schema: JsonSchema, query: unknown): unknown {
  if (typeof query !== 'object' || query === null || Array.isArray(query)) return query;
  const properties = (schema.properties ?? {}) as Readonly<Record<string, JsonSchema>>;
  const typed: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(query as Record<string, unknown>)) {
    // An unknown parameter is kept as it is: the schema names it as not a known field.
    const property = Object.hasOwn(properties, name) ? properties[name] : undefined;
    typed[name] = property ? typedValue(property, value) : value;
  }
  return typed;
}

function typedValue(schema: JsonSchema, value: unknown): unknown {
  if (schema.type === 'array') {
    const items = (schema.items ?? {}) as JsonSchema;
    return (Array.isArray(value) ? value : [value]).map((item) => typedValue(items, item));
  }
  // A repeated parameter where one value is expected stays an array: the schema refuses it.
  if (typeof value !== 'string') return value;
  switch (schema.type) {
    case 'integer':
      return /^-?(0|[1-9][0-9]*)$/.test(value) ? Number(value) : value;
    case 'number':
      return /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/.test(value) ? Number(value) : value;
    case 'boolean':
      return value === 'true' ? true : value === 'false' ? false : value;
    default:
      return value;
  }
}
