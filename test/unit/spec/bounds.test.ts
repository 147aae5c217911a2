import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { DAY_MS, MAX_SIZE_BYTES } from '../../../src/common/units.js';
import { resolveTaskSpec, SPEC_BOUNDS, type TaskSpec } from '../../../src/spec/schema.js';
import { toCreatePlan } from '../../../src/spec/translate.js';

const MiB = 1024 * 1024;

function issuesOf(spec: unknown): Array<{ field: string; rule: string }> {
  try {
    resolveTaskSpec(spec);
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
  }
  return [];
}

interface BoundCase {
  field: string;
  spec: (value: number | string) => TaskSpec;
  atMin: number | string;
  belowMin?: number | string;
  minRule?: RegExp;
  atMax: number | string;
  aboveMax: number | string;
  maxRule: RegExp;
}

const cases: BoundCase[] = [
  { field: 'timeout', spec: (v) => ({ image: 'a', timeout: v }), atMin: 1, belowMin: 0, minRule: /^must be at least 1ms$/, atMax: '365d', aboveMax: '365d1ms', maxRule: /^must be at most 365d \(31536000000 ms\)$/ },
  { field: 'stopGracePeriod', spec: (v) => ({ image: 'a', stopGracePeriod: v }), atMin: 0, atMax: '24h', aboveMax: DAY_MS + 1, maxRule: /^must be at most 24h \(86400000 ms\)$/ },
  ...(['interval', 'timeout', 'startPeriod'] as const).map((key): BoundCase => ({
    field: `healthcheck.${key}`,
    spec: (v) => ({ image: 'a', healthcheck: { command: ['true'], [key]: v } }),
    atMin: '1ms',
    belowMin: 0.4,
    minRule: /^must be at least 1ms$/,
    atMax: '24h',
    aboveMax: '24h1ms',
    maxRule: /^must be at most 24h/,
  })),
  { field: 'healthcheck.retries', spec: (v) => ({ image: 'a', healthcheck: { command: ['true'], retries: v as number } }), atMin: 1, belowMin: 0, minRule: /^must be at least 1$/, atMax: 1_000_000, aboveMax: 1_000_001, maxRule: /^must be at most 1000000$/ },
  { field: 'resources.memory', spec: (v) => ({ image: 'a', resources: { memory: v } }), atMin: '6m', belowMin: 6 * MiB - 1, minRule: /^must be at least 6m \(6291456 bytes\)$/, atMax: '1p', aboveMax: MAX_SIZE_BYTES + 1, maxRule: /^must be at most 1p \(1125899906842624 bytes\)$/ },
  { field: 'resources.memoryReservation', spec: (v) => ({ image: 'a', resources: { memory: '1p', memoryReservation: v } }), atMin: '6m', belowMin: '6143k', minRule: /^must be at least 6m/, atMax: '1024t', aboveMax: '1025t', maxRule: /^must be at most 1p/ },
  { field: 'resources.cpuMilli', spec: (v) => ({ image: 'a', resources: { cpuMilli: v as number } }), atMin: 10, belowMin: 9, minRule: /^must be at least 10$/, atMax: 1_024_000, aboveMax: 1_024_001, maxRule: /^must be at most 1024000$/ },
  { field: 'resources.cpuShares', spec: (v) => ({ image: 'a', resources: { cpuShares: v as number } }), atMin: 2, belowMin: 1, minRule: /^must be at least 2$/, atMax: 262_144, aboveMax: 262_145, maxRule: /^must be at most 262144$/ },
  { field: 'resources.pidsLimit', spec: (v) => ({ image: 'a', resources: { pidsLimit: v as number } }), atMin: 1, belowMin: 0, minRule: /^must be at least 1$/, atMax: 4_194_304, aboveMax: 4_194_305, maxRule: /^must be at most 4194304$/ },
  { field: 'mounts[0].size', spec: (v) => ({ image: 'a', mounts: [{ type: 'tmpfs', target: '/t', size: v }] }), atMin: 1, belowMin: 0, minRule: /^must be at least 1 byte$/, atMax: '1p', aboveMax: MAX_SIZE_BYTES + 1, maxRule: /^must be at most 1p \(1125899906842624 bytes\)$/ },
  { field: 'shmSize', spec: (v) => ({ image: 'a', shmSize: v }), atMin: 1, belowMin: 0, minRule: /^must be at least 1 byte$/, atMax: '1p', aboveMax: MAX_SIZE_BYTES + 1, maxRule: /^must be at most 1p/ },
  { field: 'storageSize', spec: (v) => ({ image: 'a', storageSize: v }), atMin: '1m', belowMin: MiB - 1, minRule: /^must be at least 1m/, atMax: '1p', aboveMax: MAX_SIZE_BYTES + 1, maxRule: /^must be at most 1p/ },
  { field: 'ulimits[0].soft', spec: (v) => ({ image: 'a', ulimits: [{ name: 'nofile', soft: v as number, hard: -1 }] }), atMin: -1, belowMin: -2, minRule: /^must be at least -1$/, atMax: Number.MAX_SAFE_INTEGER, aboveMax: 2 ** 53, maxRule: /^must be at most 9007199254740991$/ },
  { field: 'oomScoreAdj', spec: (v) => ({ image: 'a', oomScoreAdj: v as number }), atMin: -1000, belowMin: -1001, minRule: /^must be at least -1000$/, atMax: 1000, aboveMax: 1001, maxRule: /^must be at most 1000$/ },
  { field: 'log.maxSize', spec: (v) => ({ image: 'a', log: { maxSize: v } }), atMin: '1k', belowMin: 1023, minRule: /^must be at least 1k \(1024 bytes\)$/, atMax: MAX_SIZE_BYTES, aboveMax: MAX_SIZE_BYTES + 1, maxRule: /^must be at most 1p/ },
  { field: 'log.maxFiles', spec: (v) => ({ image: 'a', log: { maxFiles: v as number } }), atMin: 1, belowMin: 0, minRule: /^must be at least 1$/, atMax: 100, aboveMax: 101, maxRule: /^must be at most 100$/ },
  { field: 'restart.attempts', spec: (v) => ({ image: 'a', restart: { policy: 'on-failure', attempts: v as number } }), atMin: 0, belowMin: -1, minRule: /^must be at least 0$/, atMax: 100, aboveMax: 101, maxRule: /^must be at most 100$/ },
  { field: 'restart.delay', spec: (v) => ({ image: 'a', restart: { policy: 'on-failure', delay: v, maxDelay: '24h' } }), atMin: 0, atMax: '24h', aboveMax: '24h1ms', maxRule: /^must be at most 24h/ },
  { field: 'restart.maxDelay', spec: (v) => ({ image: 'a', restart: { policy: 'on-failure', delay: 0, maxDelay: v } }), atMin: 0, atMax: '24h', aboveMax: '24h1ms', maxRule: /^must be at most 24h/ },
  { field: 'priority', spec: (v) => ({ image: 'a', priority: v as number }), atMin: -1_000_000, belowMin: -1_000_001, minRule: /^must be at least -1000000$/, atMax: 1_000_000, aboveMax: 1_000_001, maxRule: /^must be at most 1000000$/ },
  { field: 'restart.interval', spec: (v) => ({ image: 'a', restart: { policy: 'on-failure', interval: v } }), atMin: '1ms', belowMin: 0, minRule: /^must be at least 1ms$/, atMax: '24d', aboveMax: '24d1ms', maxRule: /^must be at most 24d/ },
];

describe('every duration, size and count of a task spec has bounds, and values up to them are accepted', () => {
  for (const c of cases) {
    test(`${c.field}: accepts ${JSON.stringify(c.atMin)} and ${JSON.stringify(c.atMax)}, its bounds`, () => {
      assert.deepEqual(issuesOf(c.spec(c.atMin)), []);
      assert.deepEqual(issuesOf(c.spec(c.atMax)), []);
    });

    test(`${c.field}: refuses ${JSON.stringify(c.aboveMax)}, just past its upper bound, naming the field and the bound`, () => {
      const issues = issuesOf(c.spec(c.aboveMax));
      assert.equal(issues.length, 1, JSON.stringify(issues));
      assert.equal(issues[0]!.field, c.field);
      assert.match(issues[0]!.rule, c.maxRule);
    });

    if (c.belowMin !== undefined) {
      test(`${c.field}: refuses ${JSON.stringify(c.belowMin)}, just under its lower bound, naming the field and the bound`, () => {
        const issues = issuesOf(c.spec(c.belowMin!));
        assert.equal(issues.length, 1, JSON.stringify(issues));
        assert.equal(issues[0]!.field, c.field);
        assert.match(issues[0]!.rule, c.minRule!);
      });
    }
  }

  test('the bounds table covers every bound the schema declares', () => {
    const covered = new Set(['timeout', 'stopGracePeriod', 'healthcheck', 'healthRetries', 'memory', 'memoryReservation', 'cpuMilli', 'cpuShares', 'pidsLimit', 'tmpfsSize', 'logMaxSize', 'logMaxFiles', 'restartAttempts', 'restartDelay', 'restartInterval', 'shmSize', 'storageSize', 'ulimit', 'oomScoreAdj', 'priority']);
    assert.deepEqual(Object.keys(SPEC_BOUNDS).sort(), [...covered].sort());
  });

  test('a 365-day timeout resolves to exactly 365 days, and a 30-day one to 30 days', () => {
    assert.equal(resolveTaskSpec({ image: 'a', timeout: '365d' }).timeoutMs, 365 * DAY_MS);
    assert.equal(resolveTaskSpec({ image: 'a', timeout: '30d' }).timeoutMs, 30 * DAY_MS);
  });

  test('health check durations at their bound reach the engine as exact nanoseconds, within int64', () => {
    const spec = resolveTaskSpec({ image: 'a', healthcheck: { command: ['true'], interval: '24h', timeout: '24h', startPeriod: '24h', retries: 1_000_000 } });
    const check = toCreatePlan(spec, { taskId: 't', ownerId: 'o', startAttempt: 's' }).body.Healthcheck!;
    for (const ns of [check.Interval, check.Timeout, check.StartPeriod]) {
      assert.equal(ns, 86_400_000_000_000);
      assert.ok(Number.isSafeInteger(ns));
      assert.ok(BigInt(ns!) < 2n ** 63n - 1n);
    }
    assert.equal(JSON.parse(JSON.stringify(check)).Interval, 86_400_000_000_000);
  });

  test('a stop grace period at its bound reaches the engine as whole seconds', () => {
    const spec = resolveTaskSpec({ image: 'a', stopGracePeriod: '24h' });
    assert.equal(toCreatePlan(spec, { taskId: 't', ownerId: 'o', startAttempt: 's' }).body.StopTimeout, 86_400);
  });

  test('sizes at their bound stay safe integers, as the engine is sent them', () => {
    const spec = resolveTaskSpec({ image: 'a', resources: { memory: '1p', memoryReservation: '1p' }, mounts: [{ type: 'tmpfs', target: '/t', size: '1p' }], log: { maxSize: '1p' } });
    const body = toCreatePlan(spec, { taskId: 't', ownerId: 'o', startAttempt: 's' }).body;
    assert.equal(body.HostConfig.Memory, MAX_SIZE_BYTES);
    assert.equal(body.HostConfig.MemorySwap, MAX_SIZE_BYTES);
    assert.equal(body.HostConfig.Mounts?.[0]?.TmpfsOptions?.SizeBytes, MAX_SIZE_BYTES);
    assert.equal(body.HostConfig.LogConfig?.Config['max-size'], '1048576g');
    assert.ok(Number.isSafeInteger(MAX_SIZE_BYTES));
  });

  test('a value of the wrong type is refused with the field\'s rule, not coerced', () => {
    assert.deepEqual(issuesOf({ image: 'a', timeout: true }), [{ field: 'timeout', rule: 'must be a duration such as "30s", "1m30s" or a number of milliseconds' }]);
    assert.deepEqual(issuesOf({ image: 'a', resources: { memory: { bytes: 1 } } }), [{ field: 'resources.memory', rule: 'must be a size such as "128m", "1g" or a whole number of bytes' }]);
    assert.deepEqual(issuesOf({ image: 'a', resources: { pidsLimit: '64' } }), [{ field: 'resources.pidsLimit', rule: 'must be a whole number' }]);
    assert.deepEqual(issuesOf({ image: 'a', resources: { memory: 1e300 } }), [{ field: 'resources.memory', rule: 'must be a size such as "128m", "1g" or a whole number of bytes' }]);
  });
});

describe('the image is checked against the reference grammar when the spec is resolved', () => {
  const accepted = [
    'busybox',
    'busybox:1.36',
    'library/busybox:latest',
    'docker.io/library/busybox',
    'localhost/app',
    'localhost:5000/team/app:v1.2-rc_3',
    '127.0.0.1:5000/a/b/c',
    'registry.example.com/a__b/c.d-e',
    `busybox:${'t'.repeat(128)}`,
    `busybox@sha256:${'a'.repeat(64)}`,
    `busybox:1.36@sha256:${'0123456789abcdef'.repeat(4)}`,
    `${'a'.repeat(255 - 'docker.io/library/'.length)}`,
    'Registry.Example.com/app',
  ];
  for (const image of accepted) {
    test(`accepts ${JSON.stringify(image.length > 60 ? `${image.slice(0, 40)}…(${image.length})` : image)}`, () => {
      assert.deepEqual(issuesOf({ image }), []);
    });
  }

  const refused: Array<[string, string, RegExp]> = [
    ['uppercase in the repository', 'BusyBox', /lowercase/],
    ['an uppercase first component without a dot, which the engine reads as a repository', 'UPPER/case', /lowercase/],
    ['a space', 'busy box', /whitespace/],
    ['a trailing newline', 'busybox\n', /whitespace/],
    ['".." in a component', 'team/a..b', /repository is lowercase letters/],
    ['an empty component', 'team//app', /repository is lowercase letters/],
    ['a leading slash', '/busybox', /repository is lowercase letters|registry/],
    ['a trailing slash', 'busybox/', /repository is lowercase letters/],
    ['a separator at the end of a component', 'busybox-', /repository is lowercase letters/],
    ['a tag of 129 characters', `busybox:${'t'.repeat(129)}`, /tag is up to 128/],
    ['a tag starting with "."', 'busybox:.x', /tag is up to 128/],
    ['an empty tag', 'busybox:', /tag is up to 128/],
    ['"@" without a digest', 'busybox@', /digest/],
    ['a digest of 63 hex digits', `busybox@sha256:${'a'.repeat(63)}`, /64 hex digits/],
    ['a digest in uppercase hex', `busybox@sha256:${'A'.repeat(64)}`, /digest/],
    ['a digest without an algorithm', `busybox@${'a'.repeat(64)}`, /digest/],
    ['an unknown digest algorithm', `busybox@md5:${'a'.repeat(32)}`, /unsupported digest algorithm/],
    ['unicode', 'bусybox', /repository is lowercase letters/],
    ['unicode in a tag', 'busybox:lätest', /tag is up to 128/],
    ['a name longer than 255 characters', `${'a'.repeat(256 - 'docker.io/library/'.length)}`, /longer than 255/],
    ['a bad registry port', 'localhost:50x0/app', /not a valid registry host/],
    ['an empty name', '', /empty/],
  ];
  for (const [what, image, rule] of refused) {
    test(`refuses ${what}, naming the field image`, () => {
      const issues = issuesOf({ image });
      assert.equal(issues.length, 1, JSON.stringify(issues));
      assert.equal(issues[0]!.field, 'image');
      assert.match(issues[0]!.rule, /is not a valid image reference/);
      assert.match(issues[0]!.rule, rule);
    });
  }

  test('refuses an image that is not a string, naming the field', () => {
    assert.deepEqual(issuesOf({ image: 5 }).map((i) => i.field), ['image']);
    assert.deepEqual(issuesOf({}).map((i) => i.field), ['image']);
  });
});

describe('the agent\'s OpenAPI document states the spec\'s bounds', () => {
  test('durations, sizes and counts carry their minimum and maximum, and image its type', async () => {
    const { buildOpenApiDocument } = await import('../../../src/agent/http/openapi.js');
    const doc = buildOpenApiDocument() as { components: { schemas: { TaskSpec: { properties: Record<string, Record<string, unknown>> } } } };
    const props = doc.components.schemas.TaskSpec.properties;
    const numeric = (schema: Record<string, unknown> | undefined): unknown => (schema?.anyOf as Array<Record<string, unknown>> | undefined)?.find((s) => s.type !== 'string');
    assert.deepEqual(numeric(props.timeout), { type: 'number', minimum: 1, maximum: 365 * DAY_MS });
    assert.deepEqual(numeric(props.stopGracePeriod), { type: 'number', minimum: 0, maximum: DAY_MS });
    const resources = props.resources!.properties as Record<string, Record<string, unknown>>;
    assert.deepEqual(numeric(resources.memory), { type: 'integer', minimum: 6 * MiB, maximum: MAX_SIZE_BYTES });
    assert.deepEqual(resources.pidsLimit, { type: 'integer', minimum: 1, maximum: 4_194_304 });
    assert.deepEqual(resources.cpuMilli, { type: 'integer', minimum: 10, maximum: 1_024_000 });
    assert.equal(props.image!.type, 'string');
    assert.match(String(props.image!.description), /reference/);
  });
});
