/**
 * A generated corpus of malformed requests, derived from the agent's own OpenAPI document: for
 * every route that takes a body, a query string or a path parameter, fast-check draws a request
 * that breaks the schema in one place (a wrong type, a missing required field, an unknown field,
 * a number out of range, a bad id, duration or size, deep nesting, a body past the limit, garbage
 * bytes, a wrong content type, a bad query parameter) and fires it at a real agent on the real
 * engine. Every answer must be a 4xx in berth's shape with a registered code, never a 5xx, and
 * nothing may be created: no task in the agent's store, no container in the engine.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { LABELS } from '../../src/common/labels.js';
import { buildOpenApiDocument } from '../../src/agent/http/openapi.js';
import { MAX_PARAM_LENGTH, TASK_ID_PATTERN } from '../../src/agent/http/schemas.js';
import { resolveTaskSpec } from '../../src/spec/schema.js';
import { startServedAgent, type ServedAgent } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine, TEST_ENGINE_SOCKET } from '../support/engine.js';
import { assertBerthError, rawRequest, type RawResponse, type Target } from '../support/http.js';

/** The corpus is fixed: the same seed draws the same requests on every run. Override with BERTH_FUZZ_SEED to explore. */
const SEED = process.env.BERTH_FUZZ_SEED === undefined ? 20_261_129 : Number(process.env.BERTH_FUZZ_SEED);
const RUNS = 5000;

/** The kinds of malformed request the corpus draws. */
const CATEGORIES = [
  'wrong type',
  'missing required field',
  'unknown field',
  'number out of range',
  'body past the limit',
  'deep nesting',
  'bad duration',
  'bad size',
  'bad id',
  'garbage bytes',
  'wrong content type',
  'bad id parameter',
  'bad query',
  'bad image reference',
  'duration past any bound',
  'size past any bound',
] as const;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Schema = Readonly<Record<string, unknown>>;
type Path = ReadonlyArray<string | number>;

/** One drawn request, and what it is, for the failure message. */
interface Case {
  category: string;
  what: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | Buffer;
}

const engine = testEngine();
const run = testRun(engine);
const ID_RE = new RegExp(TASK_ID_PATTERN);

// ---- the API's schemas, from its OpenAPI document ----

const document = buildOpenApiDocument() as {
  paths: Record<string, Record<string, { operationId: string; parameters?: Array<{ name: string; in: string; schema: Schema }>; requestBody?: { content: Record<string, { schema: Schema }> } }>>;
  components: { schemas: Record<string, Schema> };
};

/** A schema with its `$ref` and `allOf` resolved into one object schema (what the agent checks, in all). */
function resolveSchema(schema: Schema): Schema {
  if (typeof schema.$ref === 'string') return resolveSchema(document.components.schemas[schema.$ref.replace('#/components/schemas/', '')]!);
  if (Array.isArray(schema.allOf)) {
    const parts = (schema.allOf as Schema[]).map(resolveSchema);
    const merged: Record<string, unknown> = {};
    for (const part of parts) {
      for (const [key, value] of Object.entries(part)) {
        if (key === 'properties') merged.properties = { ...(merged.properties as object | undefined), ...(value as object) };
        else if (key === 'required') merged.required = [...new Set([...((merged.required as string[] | undefined) ?? []), ...(value as string[])])];
        else if (key === 'additionalProperties') merged.additionalProperties = merged.additionalProperties === false ? false : value;
        else merged[key] = value;
      }
    }
    return merged;
  }
  return schema;
}

function operation(id: string): { method: string; path: string; op: (typeof document.paths)[string][string] } {
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, op] of Object.entries(operations)) if (op.operationId === id) return { method: method.toUpperCase(), path, op };
  }
  throw new Error(`no operation ${id} in the OpenAPI document`);
}

function bodySchemaOf(id: string): Schema {
  const schema = operation(id).op.requestBody?.content['application/json']?.schema;
  assert.ok(schema, `${id} takes a JSON body`);
  return resolveSchema(schema);
}

const typesOf = (schema: Schema): string[] => (schema.type === undefined ? [] : Array.isArray(schema.type) ? (schema.type as string[]) : [schema.type as string]);

/** The variant of a `oneOf` that describes `value` (mounts: by their `type` constant). */
function variantFor(schema: Schema, value: unknown): Schema {
  const variants = (schema.oneOf as Schema[] | undefined) ?? [];
  const kind = (value as { type?: unknown } | null)?.type;
  return variants.find((v) => ((v.properties as Record<string, Schema> | undefined)?.type?.const ?? undefined) === kind) ?? schema;
}

/** A place in a body where a value is, or may be: its path and the schema it must meet. */
interface Slot {
  path: Path;
  schema: Schema;
  /** Whether a value is there in the base body (else the slot is an optional field left out). */
  present: boolean;
}

function slotsOf(rawSchema: Schema, value: unknown, path: Path = []): Slot[] {
  const schema = resolveSchema(variantFor(resolveSchema(rawSchema), value));
  const out: Slot[] = [{ path, schema, present: true }];
  if (typesOf(schema).includes('object') && typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    for (const [key, sub] of Object.entries(properties)) {
      if (Object.hasOwn(value, key)) out.push(...slotsOf(sub, (value as Record<string, unknown>)[key], [...path, key]));
      else out.push({ path: [...path, key], schema: resolveSchema(sub), present: false });
    }
    const extra = schema.additionalProperties;
    if (typeof extra === 'object' && extra !== null) {
      for (const key of Object.keys(value).filter((k) => !Object.hasOwn(properties, k))) out.push(...slotsOf(extra as Schema, (value as Record<string, unknown>)[key], [...path, key]));
    }
  }
  if (typesOf(schema).includes('array') && Array.isArray(value)) {
    value.forEach((item, i) => out.push(...slotsOf((schema.items ?? {}) as Schema, item, [...path, i])));
  }
  return out;
}

/** Objects whose schema refuses unknown fields (`additionalProperties: false`), present in the base body. */
const closedObjects = (slots: Slot[]): Slot[] => slots.filter((s) => s.present && typesOf(s.schema).includes('object') && s.schema.additionalProperties === false);

/** Required fields present in the base body. */
const requiredFields = (slots: Slot[]): Path[] =>
  slots.filter((s) => s.present && Array.isArray(s.schema.required)).flatMap((s) => (s.schema.required as string[]).map((key) => [...s.path, key]));

function setAt(body: Json, path: Path, value: Json): Json {
  if (path.length === 0) return value;
  const copy = structuredClone(body);
  let node = copy as Record<string | number, Json>;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, Json>;
  // An own property even for `__proto__`, which an assignment would take as the prototype.
  Object.defineProperty(node, path[path.length - 1]!, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

function deleteAt(body: Json, path: Path): Json {
  const copy = structuredClone(body);
  let node = copy as Record<string | number, Json>;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, Json>;
  delete node[path[path.length - 1]!];
  return copy;
}

/** A value to put where raw JSON text goes instead (numbers JSON.stringify cannot write, nesting too deep to build). */
const RAW = '\u0000raw\u0000';
const toText = (body: Json, raw?: string): string => {
  const text = JSON.stringify(body);
  return raw === undefined ? text : text.replace(JSON.stringify(RAW), raw);
};

// ---- values that break a schema ----

/** A JSON value of a type the schema does not allow, coercible look-alikes first ("5" for 5, "true" for true, 5 for "5"). */
function wrongTypeValue(schema: Schema): fc.Arbitrary<Json> {
  const allowed = new Set(typesOf(schema));
  if (allowed.has('integer')) allowed.add('number');
  const candidates: Array<[string, fc.Arbitrary<Json>]> = [
    ['string', fc.constantFrom<Json>('5', '0', '1.5', 'true', 'false', '', 'null', '[]')],
    ['number', fc.constantFrom<Json>(5, 0, -1, 1.5, 250)],
    ['boolean', fc.constantFrom<Json>(true, false)],
    ['null', fc.constant<Json>(null)],
    ['array', fc.constantFrom<Json>([], ['5'], [5], [true])],
    ['object', fc.constantFrom<Json>({}, { value: '5' })],
  ];
  const usable = candidates.filter(([type]) => !allowed.has(type)).map(([, arbitrary]) => arbitrary);
  // An integer field also refuses a fraction.
  if (typesOf(schema).includes('integer') && !typesOf(schema).includes('number')) usable.push(fc.constantFrom<Json>(1.5, 0.5));
  return fc.oneof(...usable);
}

/** Numbers past a field's range, or not whole where it must be, or past what JSON numbers hold. */
function outOfRange(schema: Schema): fc.Arbitrary<{ value: Json; raw?: string }> {
  const choices: Array<{ value: Json; raw?: string }> = [{ value: RAW, raw: '1e309' }, { value: RAW, raw: '-1e309' }];
  if (typeof schema.minimum === 'number') choices.push({ value: schema.minimum - 1 }, { value: -(2 ** 53) - 2 });
  if (typeof schema.maximum === 'number' && schema.maximum < Number.MAX_SAFE_INTEGER) choices.push({ value: schema.maximum + 1 });
  if (typesOf(schema).includes('integer')) choices.push({ value: 1.5 }, { value: RAW, raw: '1e400' });
  return fc.constantFrom(...choices);
}

/**
 * A path segment for `text`: its UTF-8 bytes percent-encoded (a lone surrogate as U+FFFD), all but
 * unreserved characters, or (`keepPrintable`) only what cannot be written in a request line at all.
 */
function percentEncoded(text: string, keepPrintable: boolean): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    const char = String.fromCharCode(byte);
    const keep = keepPrintable ? byte > 0x20 && byte < 0x7f : /[A-Za-z0-9_.~-]/.test(char);
    out += keep ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Ids the API must refuse: empty, bad first character, characters outside [a-zA-Z0-9_.-], too long, bytes that are not text. */
const badId = fc.oneof(
  fc.constantFrom('', '-x', '.x', '_x', 'a b', 'a/b', 'a\\b', 'é', 'a\u0000b', '..', 'a%2Fb', 'ä'.repeat(10), 'x'.repeat(129), 'x'.repeat(4096), '\ud800', 'a\nb', 'a?b', 'a#b'),
  fc.string({ minLength: 1, maxLength: 200, unit: 'binary' }).filter((s) => !ID_RE.test(s)),
);

/** Durations no rule accepts: signs, unknown units, malformed numbers, spaces, words. */
const badDuration = fc.constantFrom<Json>('-1s', -1, '', 'abc', '1.2.3s', '5S', '5 s', '1e99h', 's', 'ms', '--5s', 'NaN', 'Infinity', '5s5', '1h-30m');
/** Sizes no rule accepts. */
const badSize = fc.constantFrom<Json>('-1', -1, '5x', '', 'lots', 1.5, '1.2.3m', '5m5', 'm', '-5m', 'NaN', '5mm');
/** Image references the grammar refuses (none of them names an image the engine has). */
const badImageRef = fc.constantFrom('UPPER/case', 'a:', ':tag', 'a@sha256:zz', 'a//b', '-a', 'a:b:c', 'a..b', 'x'.repeat(300), 'a_/b', 'é', '@', 'a:tag@', 'a/', '/a', 'a:-tag');
/** Durations past any bound a task could need (ten thousand years and more). */
const durationPastAnyBound = fc.constantFrom<Json>(1e20, '100000000h', 2 ** 53 - 1, '9007199254740991ms');
/** Sizes past any bound (berth's ceiling is 1 PiB: two and more). */
const sizePastAnyBound = fc.constantFrom<Json>('2p', '2000000g', 2 ** 53 - 1, '9000000000000000');

/** A body whose bytes are not JSON: random bytes, truncated JSON, invalid UTF-8 around JSON. */
const garbageBody = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 512 }).map((bytes) => Buffer.from(bytes)),
  fc.constantFrom(Buffer.from('{"spec":'), Buffer.from('{"spec":{"image":"x"'), Buffer.from([0xff, 0xfe, 0x7b, 0x7d]), Buffer.from('\ufeff{"spec":{}}x'), Buffer.from('{"spec":{}}{"spec":{}}')),
  // Bytes that are not UTF-8 inside JSON that is otherwise well-formed: in an id, in an env name, as a key.
  fc.constantFrom(
    Buffer.concat([Buffer.from('{"id":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('","spec":{"image":"x","pull":"never"}}')]),
    Buffer.concat([Buffer.from('{"spec":{"image":"x","pull":"never","env":{"A'), Buffer.from([0xc3, 0x28]), Buffer.from('":"1"}}}')]),
    Buffer.concat([Buffer.from('{"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('":1,"spec":{"image":"x","pull":"never"}}')]),
  ),
);
/** Content types that are not JSON, for a body that otherwise would be accepted. */
const notJsonContentType = fc.oneof(
  fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'text/json', 'application/octet-stream', 'application/jsonp', 'image/png'),
  fc.stringMatching(/^[a-z]{1,10}\/[a-z0-9.+-]{1,20}$/).filter((type) => !/^application\/(json|[a-z0-9.-]+\+json)$/.test(type)),
);

/** Text nested `depth` levels deep: arrays or objects, under the body limit. */
const deepNesting = fc.record({ depth: fc.integer({ min: 200, max: 150_000 }), asObject: fc.boolean() }).map(({ depth, asObject }) =>
  asObject ? `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}` : `${'['.repeat(depth)}${']'.repeat(depth)}`,
);

// ---- the routes ----

const SUBMIT = bodySchemaOf('submitTask');
const PRUNE = bodySchemaOf('prune');

describe('a generated corpus of malformed requests', { skip: await requireEngine() }, () => {
  let agent: ServedAgent;
  let target: Target;
  let auth: Record<string, string>;
  /** A real task that ended, so that its logs route (read-only) is reached with malformed queries. */
  let endedTaskId: string;
  let containersBefore: string[];

  /** The agent's containers in the engine, by id. */
  const ownContainers = async (): Promise<string[]> =>
    (await engine.listContainers({ all: true, labels: [`${LABELS.ownerId}=${agent.runtime.agentId}`] })).map((c) => c.id).sort();

  const baseSpec = (): { [key: string]: Json } => ({
    image: TEST_IMAGE,
    command: ['true'],
    env: { GREETING: 'hello' },
    labels: { ...run.labels },
    resources: { memory: '64m', cpuMilli: 100, pidsLimit: 64 },
    mounts: [{ type: 'tmpfs', target: '/scratch', size: '1m' }],
    log: { driver: 'local', maxSize: '1m', maxFiles: 1 },
    timeout: '30s',
    stopGracePeriod: '1s',
    stopSignal: 'SIGTERM',
    pull: 'never',
    network: 'none',
    tty: false,
    healthcheck: { command: ['true'], interval: '1s', retries: 1 },
  });
  const baseSubmit = (): Json => ({ id: `${run.id}-base`, spec: baseSpec() });
  // A dry run scoped to this run's label: even a prune that were wrongly accepted would remove nothing.
  const basePrune = (): Json => ({ filters: [`label=${run.labelFilter}`], dryRun: true });

  before(async () => {
    // Holders are counted only with cleanup on; the test image is shared, so its removal is put off past the run.
    agent = await startServedAgent(TEST_ENGINE_SOCKET, { images: { cleanup: true, removeDelay: '1h' } });
    target = { socketPath: agent.serving.socketPath };
    auth = { authorization: `Bearer ${agent.runtime.token}` };
    endedTaskId = `${run.id}-ended`;
    await agent.client.submit({ id: endedTaskId, spec: { image: TEST_IMAGE, command: ['echo', 'hi'], labels: { ...run.labels }, pull: 'never' } });
    await pollUntil('the task to end', async () => ((await agent.client.get(endedTaskId)).state === 'exited' ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    containersBefore = await ownContainers();
  });

  after(async () => {
    await agent.close();
    await run.cleanup();
  });

  test('the base requests the corpus mutates are valid, so each drawn request breaks exactly what it says', () => {
    assert.doesNotThrow(() => resolveTaskSpec(baseSpec()));
    // Every category has slots to draw from.
    const slots = slotsOf(SUBMIT, baseSubmit());
    assert.ok(closedObjects(slots).length >= 5);
    assert.ok(requiredFields(slots).length >= 2);
    assert.ok(slots.filter((s) => typesOf(s.schema).some((t) => t === 'integer' || t === 'number')).length >= 5);
  });

  test('every malformed request is answered 4xx in berth\'s shape, never 5xx, and nothing is created', async (t) => {
    const json = (): Record<string, string> => ({ ...auth, 'content-type': 'application/json' });
    const bodyRoutes = [
      { name: 'submitTask', url: '/v1/tasks', schema: SUBMIT, base: baseSubmit },
      { name: 'prune', url: '/v1/prune', schema: PRUNE, base: basePrune },
    ];
    const bodyRoute = fc.constantFrom(...bodyRoutes);
    /** A category's requests on every body route it applies to: `make` answers undefined for a route without slots for it. */
    const mutation = (category: string, make: (route: (typeof bodyRoutes)[number]) => fc.Arbitrary<{ what: string; body: Json; raw?: string }> | undefined): fc.Arbitrary<Case> => {
      const perRoute = bodyRoutes.flatMap((route) => {
        const arbitrary = make(route);
        return arbitrary ? [arbitrary.map(({ what, body, raw }) => ({ category, what: `${route.name}: ${what}`, method: 'POST', url: route.url, headers: json(), body: toText(body, raw) }))] : [];
      });
      assert.ok(perRoute.length > 0, `${category} applies to no route`);
      return fc.oneof(...perRoute);
    };
    const fromSlots = (slots: Slot[]): fc.Arbitrary<Slot> | undefined => (slots.length > 0 ? fc.constantFrom(...slots) : undefined);
    const slotsWhere = (route: (typeof bodyRoutes)[number], keep: (slot: Slot) => boolean): Slot[] => slotsOf(route.schema, route.base()).filter(keep);
    const fieldName = (path: Path): string => (path.length === 0 ? '(body)' : path.join('.'));

    const wrongType = mutation('wrong type', (route) =>
      fc.constantFrom(...slotsWhere(route, (s) => typesOf(s.schema).length > 0)).chain((slot) =>
        wrongTypeValue(slot.schema).map((value) => ({ what: `${fieldName(slot.path)} = ${JSON.stringify(value)}`, body: setAt(route.base(), slot.path, value) })),
      ),
    );
    const missingRequired = mutation('missing required field', (route) => {
      const required = requiredFields(slotsOf(route.schema, route.base()));
      // prune's body has no required field: its whole body is left out instead.
      if (required.length === 0) return fc.constant({ what: 'no body at all', body: null });
      return fc.constantFrom(...required).map((path) => ({ what: `without ${fieldName(path)}`, body: deleteAt(route.base(), path) }));
    });
    const extraField = mutation('unknown field', (route) =>
      fc
        .tuple(
          fc.constantFrom(...closedObjects(slotsOf(route.schema, route.base()))),
          fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'Image', 'IMAGE', 'extra', ''), fc.string({ minLength: 1, maxLength: 20 })),
          fc.constantFrom<Json>(1, 'x', null, {}, []),
        )
        .filter(([slot, key]) => !Object.hasOwn((slot.schema.properties ?? {}) as object, key))
        .map(([slot, key, value]) => ({ what: `${fieldName([...slot.path, key])} added`, body: setAt(route.base(), [...slot.path, key], value) })),
    );
    const outOfRangeNumber = mutation('number out of range', (route) =>
      fromSlots(slotsWhere(route, (s) => typesOf(s.schema).some((ty) => ty === 'integer' || ty === 'number') && !typesOf(s.schema).includes('string')))?.chain((slot) =>
        outOfRange(slot.schema).map(({ value, raw }) => ({ what: `${fieldName(slot.path)} = ${raw ?? JSON.stringify(value)}`, body: setAt(route.base(), slot.path, value), ...(raw ? { raw } : {}) })),
      ),
    );
    const hugeBody = mutation('body past the limit', (route) =>
      fc.tuple(fc.constantFrom(...slotsWhere(route, (s) => typesOf(s.schema).includes('string'))), fc.integer({ min: 1024 * 1024 + 1, max: 3 * 1024 * 1024 })).map(([slot, size]) => ({
        what: `${fieldName(slot.path)} of ${size} characters`,
        body: setAt(route.base(), slot.path, 'a'.repeat(size)),
      })),
    );
    const deep = mutation('deep nesting', (route) =>
      fc.tuple(fc.constantFrom(...slotsWhere(route, () => true)), deepNesting).map(([slot, raw]) => ({ what: `${fieldName(slot.path)} nested ${raw.length / 2} levels`, body: setAt(route.base(), slot.path, RAW), raw })),
    );
    const durationFields: Path[] = [['spec', 'timeout'], ['spec', 'stopGracePeriod'], ['spec', 'healthcheck', 'interval'], ['spec', 'healthcheck', 'timeout'], ['spec', 'healthcheck', 'startPeriod']];
    const sizeFields: Path[] = [['spec', 'resources', 'memory'], ['spec', 'resources', 'memoryReservation'], ['spec', 'log', 'maxSize'], ['spec', 'mounts', 0, 'size']];
    const submitWith = (category: string, fields: Path[], values: fc.Arbitrary<Json>): fc.Arbitrary<Case> =>
      fc.tuple(fc.constantFrom(...fields), values).map(([path, value]) => ({ category, what: `${fieldName(path)} = ${JSON.stringify(value)}`, method: 'POST', url: '/v1/tasks', headers: json(), body: toText(setAt(baseSubmit(), path, value)) }));
    const badBodyId = badId.map((id) => ({ category: 'bad id', what: `id = ${JSON.stringify(id)}`, method: 'POST', url: '/v1/tasks', headers: json(), body: toText(setAt(baseSubmit(), ['id'], id)) }));
    const garbage = fc.tuple(bodyRoute, garbageBody).map(([route, bytes]) => ({ category: 'garbage bytes', what: `${route.name}: ${bytes.length} bytes ${bytes.subarray(0, 16).toString('hex')}`, method: 'POST', url: route.url, headers: json(), body: bytes }));
    // The body is one the agent would accept: only its content type is wrong.
    const wrongContentType = fc.tuple(bodyRoute, notJsonContentType).map(([route, type]) => ({
      category: 'wrong content type',
      what: `${route.name} as ${type}`,
      method: 'POST',
      url: route.url,
      headers: { ...auth, 'content-type': type },
      body: toText(route.base()),
    }));
    const idRoutes = [
      ['GET', (id: string) => `/v1/tasks/${id}`],
      ['POST', (id: string) => `/v1/tasks/${id}/stop`],
      ['DELETE', (id: string) => `/v1/tasks/${id}`],
      ['GET', (id: string) => `/v1/tasks/${id}/logs`],
    ] as const;
    const badParam = fc.tuple(fc.constantFrom(...idRoutes), badId, fc.constantFrom('encoded', 'raw', 'past the router')).map(([[method, url], id, form]) => {
      const segment = form === 'encoded' ? percentEncoded(id, false) : form === 'raw' ? percentEncoded(id, true) : `${percentEncoded(id, false)}${'x'.repeat(MAX_PARAM_LENGTH + 1)}`;
      return { category: 'bad id parameter', what: `${method} ${url(`<${JSON.stringify(id)} ${form}>`)}`, method, url: url(segment), headers: auth };
    });
    const badQueryValue = fc.oneof(
      fc.tuple(fc.constant('limit'), fc.constantFrom('abc', '0x10', '1e3', ' 5', '5.0', '-1', '100001', '', '1.5', '99999999999999999999', '+5', '05')),
      fc.tuple(fc.constant('state'), fc.constantFrom('sleeping', 'RUNNING', 'running,,exited', '', 'running;exited', ',running')),
      fc.tuple(fc.constant('label'), fc.constant('')),
      fc.tuple(fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !['limit', 'state', 'label'].includes(k)), fc.string({ maxLength: 12 })),
    );
    const badListQuery = badQueryValue.map(([key, value]) => ({
      category: 'bad query',
      what: `GET /v1/tasks?${key}=${JSON.stringify(value)}`,
      method: 'GET',
      url: `/v1/tasks?${new URLSearchParams([[key, value]])}`,
      headers: auth,
    }));
    const badLogsQuery = fc
      .oneof(
        fc.tuple(fc.constant('follow'), fc.constantFrom('yes', '1', 'TRUE', 'on', '', 'false ')),
        fc.tuple(fc.constant('since'), fc.constantFrom('yesterday', '2024-13-45T99:99:99Z', '2024-02-30T10:00:00Z', '0000-00-00T00:00:00Z', '2024-05-01', '2024-05-01T10:00:00', '2024-05-01T10:00:00.1234567890Z', '9999-12-31T23:59:60+99:99')),
        fc.tuple(fc.constant('stream'), fc.constantFrom('both', 'STDOUT', '', 'stdin')),
        fc.tuple(fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !['follow', 'since', 'stream'].includes(k)), fc.string({ maxLength: 12 })),
      )
      .map(([key, value]) => ({
        category: 'bad query',
        what: `GET logs?${key}=${JSON.stringify(value)}`,
        method: 'GET',
        url: `/v1/tasks/${endedTaskId}/logs?${new URLSearchParams([[key, value]])}`,
        headers: auth,
      }));
    const repeatedScalar = fc.constantFrom(
      { category: 'bad query', what: 'limit twice', method: 'GET', url: '/v1/tasks?limit=1&limit=2', headers: auth },
      { category: 'bad query', what: 'follow twice', method: 'GET', url: `/v1/tasks/${endedTaskId}/logs?follow=true&follow=false`, headers: auth },
      { category: 'bad query', what: 'since twice', method: 'GET', url: `/v1/tasks/${endedTaskId}/logs?since=2024-05-01T10:00:00Z&since=2024-05-01T10:00:00Z`, headers: auth },
    );

    // Specs past the spec's bounds: an image that does not exist, never pulled, and an id of their own each, so that an accepted one (a bug) would run nothing.
    const absentImage = `berth-test/absent-${run.id}:none`;
    const pastBound = (category: (typeof CATEGORIES)[number], fields: Path[], values: fc.Arbitrary<Json>): fc.Arbitrary<Case> =>
      fc.tuple(fc.constantFrom(...fields), values, fc.uuid()).map(([path, value, uuid]) => {
        const base = setAt(setAt(baseSubmit(), ['id'], `${run.id}-other-${uuid}`), ['spec', 'image'], absentImage);
        return { category, what: `${fieldName(path)} = ${JSON.stringify(value).slice(0, 60)}`, method: 'POST', url: '/v1/tasks', headers: json(), body: toText(setAt(base, path, value)) };
      });
    const corpus: fc.Arbitrary<Case> = fc.oneof(
      { arbitrary: pastBound('bad image reference', [['spec', 'image']], badImageRef), weight: 1 },
      { arbitrary: pastBound('duration past any bound', [['spec', 'timeout'], ['spec', 'stopGracePeriod']], durationPastAnyBound), weight: 1 },
      { arbitrary: pastBound('size past any bound', [['spec', 'log', 'maxSize'], ['spec', 'mounts', 0, 'size']], sizePastAnyBound), weight: 1 },
      { arbitrary: wrongType, weight: 4 },
      { arbitrary: missingRequired, weight: 4 },
      { arbitrary: extraField, weight: 4 },
      { arbitrary: outOfRangeNumber, weight: 4 },
      { arbitrary: hugeBody, weight: 4 },
      { arbitrary: deep, weight: 4 },
      { arbitrary: submitWith('bad duration', durationFields, badDuration), weight: 4 },
      { arbitrary: submitWith('bad size', sizeFields, badSize), weight: 4 },
      { arbitrary: badBodyId, weight: 4 },
      { arbitrary: garbage, weight: 4 },
      { arbitrary: wrongContentType, weight: 4 },
      { arbitrary: badParam, weight: 4 },
      { arbitrary: badListQuery, weight: 4 },
      { arbitrary: badLogsQuery, weight: 4 },
      { arbitrary: repeatedScalar, weight: 4 },
    );

    const seen = new Map<string, number>();
    const statuses = new Map<number, number>();
    const startedAt = Date.now();
    try {
      await fc.assert(
        fc.asyncProperty(corpus, async (drawn) => {
          let response: RawResponse;
          try {
            response = await rawRequest(target, drawn.method, drawn.url, { headers: drawn.headers, ...(drawn.body === undefined ? {} : { body: drawn.body }) });
          } catch (error) {
            throw new Error(`${drawn.category}: ${drawn.what}: no answer (${(error as Error).message})`);
          }
          seen.set(drawn.category, (seen.get(drawn.category) ?? 0) + 1);
          statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
          assert.ok(response.status >= 400 && response.status < 500, `${drawn.category}: ${drawn.what}: answered ${response.status}: ${response.body.slice(0, 300)}`);
          assertBerthError(response, { status: response.status }, `${drawn.category}: ${drawn.what}`);
        }),
        { seed: SEED, numRuns: RUNS },
      );
    } catch (error) {
      t.diagnostic(`the corpus failed with seed ${SEED} (rerun with BERTH_FUZZ_SEED=${SEED}): ${String((error as { cause?: unknown }).cause ?? '')}`);
      throw error;
    }
    t.diagnostic(`${RUNS} requests in ${Date.now() - startedAt} ms, seed ${SEED}; by category: ${JSON.stringify(Object.fromEntries(seen))}; by status: ${JSON.stringify(Object.fromEntries(statuses))}`);
    // Every category was drawn.
    assert.deepEqual([...seen.keys()].sort(), [...CATEGORIES].sort());

    // Nothing was created: the only task in the agent's store is the one the test ran before the
    // corpus, and the engine has no new container.
    assert.deepEqual(agent.runtime.store.tasks.list().map((task) => task.id), [endedTaskId]);
    // (The ended task's container may have been removed meanwhile: no container may be new.)
    const before = new Set(containersBefore);
    assert.deepEqual((await ownContainers()).filter((id) => !before.has(id)), []);
    const labelled = await engine.listContainers({ all: true, labels: [run.labelFilter] });
    assert.deepEqual(labelled.map((c) => c.id).filter((id) => !before.has(id)), []);
    // And the agent still serves.
    assert.equal((await agent.client.get(endedTaskId)).state, 'exited');
  });
});
