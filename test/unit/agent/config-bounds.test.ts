import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { MAX_TIMER_DELAY_MS } from '../../../src/common/timers.js';
import { DURATION_LIMITS, formatDurationMs, type DurationBounds, type SizeBounds } from '../../../src/common/units.js';
import { CONFIG_BOUNDS, loadAgentConfig, type AgentConfigInput, type HostFacts } from '../../../src/agent/config.js';
import { engineOptionsOf, parseDockerHost } from '../../../src/engine/connect.js';
import { resolvePrunerOptions } from '../../../src/prune/options.js';
import { resolveImageCoordinatorOptions } from '../../../src/images/options.js';
import { resolveDanglingReconcilerOptions } from '../../../src/reconcile/options.js';

const GiB = 1024 ** 3;
const host: HostFacts = { uid: 1000, homedir: '/home/ada', totalMemoryBytes: 8 * GiB, cpuCount: 4 };

/** `{ a: { b: value } }` from `a.b`. */
function input(key: string, value: unknown): AgentConfigInput {
  const parts = key.split('.');
  const root: Record<string, unknown> = {};
  let node = root;
  for (const part of parts.slice(0, -1)) node = (node[part] = {}) as Record<string, unknown>;
  node[parts.at(-1)!] = value;
  return root as AgentConfigInput;
}

/**
 * Keys bounded by another key as well: the other is set to let the value under test through
 * (http.headersTimeout must not exceed http.requestTimeout).
 */
const COMPANIONS: Readonly<Record<string, AgentConfigInput>> = {
  'http.headersTimeout': { http: { requestTimeout: CONFIG_BOUNDS['http.requestTimeout'].maxMs } },
  'http.requestTimeout': { http: { headersTimeout: CONFIG_BOUNDS['http.headersTimeout'].minMs } },
  // A cluster key needs the database and an address; the heartbeat must be shorter than the lease.
  ...Object.fromEntries(
    ['cluster.capacity.memory', 'cluster.capacity.cpuMilli', 'cluster.capacity.tasks', 'cluster.lease', 'cluster.heartbeat'].map((key) => [
      key,
      {
        listen: '127.0.0.1:7070',
        cluster: {
          postgres: 'postgres://db.example/berth',
          ...(key === 'cluster.lease' ? { heartbeat: CONFIG_BOUNDS['cluster.heartbeat'].minMs } : key === 'cluster.heartbeat' ? { lease: CONFIG_BOUNDS['cluster.lease'].maxMs } : {}),
        },
      },
    ]),
  ),
};

function issuesFor(key: string, value: unknown): Array<{ field: string; rule: string }> {
  const own = input(key, value) as Record<string, Record<string, unknown>>;
  const companion = (COMPANIONS[key] ?? {}) as Record<string, Record<string, unknown>>;
  const flags: Record<string, Record<string, unknown>> = { ...companion, ...own };
  for (const section of Object.keys(companion)) if (own[section]) flags[section] = { ...companion[section], ...own[section] };
  try {
    loadAgentConfig({ host, flags: flags as AgentConfigInput });
    return [];
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return error.issues.map((i) => ({ field: i.field, rule: i.rule }));
  }
}

const isDuration = (b: object): b is DurationBounds => 'maxMs' in b;
const isSize = (b: object): b is SizeBounds => 'maxBytes' in b;

describe('every duration, size and count key of the agent configuration has bounds, and values up to them load', () => {
  for (const [key, bounds] of Object.entries(CONFIG_BOUNDS)) {
    const [min, max] = isDuration(bounds) ? [bounds.minMs, bounds.maxMs] : isSize(bounds) ? [bounds.minBytes, bounds.maxBytes] : [bounds.min, bounds.max];
    it(`${key}: loads ${min} and ${max}, its bounds`, () => {
      assert.deepEqual(issuesFor(key, min), []);
      assert.deepEqual(issuesFor(key, max), []);
    });

    it(`${key}: refuses ${max + 1}, one past its upper bound, naming the key`, () => {
      const issues = issuesFor(key, max + 1);
      assert.equal(issues.length, 1, JSON.stringify(issues));
      assert.equal(issues[0]!.field, key);
      assert.match(issues[0]!.rule, isDuration(bounds) ? new RegExp(`${formatDurationMs(max)}`) : new RegExp(`${max}`));
      assert.match(issues[0]!.rule, /from flags/);
    });

    if (min > 0) {
      it(`${key}: refuses ${min - 1}, one under its lower bound, naming the key`, () => {
        const issues = issuesFor(key, min - 1);
        assert.equal(issues.length, 1, JSON.stringify(issues));
        assert.equal(issues[0]!.field, key);
        assert.match(issues[0]!.rule, /at least|from/);
      });
    }
  }

  it('a duration key held by a Node timer is bounded below the timer\'s 2^31-1 ms limit', () => {
    for (const key of ['tasks.relistPeriod', 'images.removeDelay', 'reconcile.period'] as const) {
      assert.ok(CONFIG_BOUNDS[key].maxMs <= DURATION_LIMITS.timerMs, key);
    }
    // An engine deadline goes into AbortSignal.timeout, a write deadline twice over (the late-create guard).
    for (const key of ['engine.readTimeout', 'engine.writeTimeout', 'health.engineTimeout'] as const) {
      assert.ok(CONFIG_BOUNDS[key].maxMs * 2 < MAX_TIMER_DELAY_MS, key);
    }
    assert.ok(DURATION_LIMITS.timerMs < MAX_TIMER_DELAY_MS);
  });

  it('loads the keys\' bounds written as users write them, from YAML-like text', () => {
    const config = loadAgentConfig({
      host,
      flags: {
        engine: { readTimeout: '24h', writeTimeout: '24h' },
        tasks: { startOutageLimit: '365d', relistPeriod: '24d' },
        reconcile: { period: '24d', creationGrace: '365d', orphanGrace: '365d' },
        prune: { schedule: '30d', imageBudget: '1p' },
        logs: { maxFileSize: '1p', maxFiles: 100 },
      },
    });
    assert.equal(config.tasks.startOutageLimitMs, 365 * 86_400_000);
    assert.equal(config.prune.scheduleMs, 30 * 86_400_000, 'a monthly prune: held by setLongInterval, not one Node timer');
    assert.equal(config.prune.imageBudgetBytes, 1024 ** 5);
  });

  it('refuses "off" keys past their bound with the bound in the rule', () => {
    assert.deepEqual(issuesFor('prune.schedule', '366d'), [
      { field: 'prune.schedule', rule: 'must be "off" or a duration from 1m to 365d, such as "24h" (must be at most 365d (31536000000 ms)) (from flags)' },
    ]);
    assert.match(issuesFor('tasks.startOutageLimit', '366d')[0]!.rule, /from 1s to 365d/);
  });

  it('names the environment variable a value past its bound came from', () => {
    assert.throws(
      () => loadAgentConfig({ host, env: { BERTH_RECONCILE_PERIOD: '25d' } }),
      (error: unknown) => error instanceof ValidationError && /reconcile\.period: must be at most 24d .*\(from BERTH_RECONCILE_PERIOD\)/.test(error.message),
    );
  });

  it('clamps the default admission CPU of a host past the key\'s bound, so that it still starts', () => {
    const big = loadAgentConfig({ host: { ...host, cpuCount: 2048 } });
    assert.equal(big.admission.cpuMilli, CONFIG_BOUNDS['admission.cpuMilli'].max);
  });

  it('checks prune.exemptImages against the image reference grammar, naming the item', () => {
    assert.deepEqual(issuesFor('prune.exemptImages', ['busybox', 'registry.example.com:5000/team/app:v1']), []);
    const issues = issuesFor('prune.exemptImages', ['busybox', 'Busy Box', 'a..b']);
    assert.deepEqual(issues.map((i) => i.field), ['prune.exemptImages[1]', 'prune.exemptImages[2]']);
    assert.match(issues[0]!.rule, /"Busy Box" is not a valid image reference: it contains whitespace/);
  });

  it('the images.* and reconcile.* keys hold the library components\' own rules: a value one refuses the other refuses in the same words', () => {
    const libraryIssues = (load: () => unknown): Array<{ field: string; rule: string }> => {
      try {
        load();
        return [];
      } catch (error) {
        assert.ok(error instanceof ValidationError, String(error));
        return error.issues.map((i) => ({ field: i.field, rule: `${i.rule} (from flags)` }));
      }
    };
    const cases: Array<[string, unknown, () => unknown]> = [
      ['images.pullActivityTimeout', 99, () => resolveImageCoordinatorOptions({ pullActivityTimeout: 99 }, 'images.')],
      ['images.pullActivityTimeout', 'soon', () => resolveImageCoordinatorOptions({ pullActivityTimeout: 'soon' }, 'images.')],
      ['images.removeDelay', '25d', () => resolveImageCoordinatorOptions({ removeDelay: '25d' }, 'images.')],
      ['images.cleanup', 'yes', () => resolveImageCoordinatorOptions({ cleanup: 'yes' as never }, 'images.')],
      ['reconcile.period', 99, () => resolveDanglingReconcilerOptions({ period: 99 }, 'reconcile.')],
      ['reconcile.creationGrace', '366d', () => resolveDanglingReconcilerOptions({ creationGrace: '366d' }, 'reconcile.')],
      ['reconcile.dryRun', 1, () => resolveDanglingReconcilerOptions({ dryRun: 1 as never }, 'reconcile.')],
    ];
    for (const [key, value, library] of cases) {
      const issues = issuesFor(key, value);
      assert.equal(issues.length, 1, `${key}=${String(value)}: ${JSON.stringify(issues)}`);
      assert.deepEqual(issues, libraryIssues(library));
    }
    // reconcile.orphanGrace is also the pruner's orphanGrace (agent/garbage.ts passes it to both): both accept its bounds.
    const { maxMs } = CONFIG_BOUNDS['reconcile.orphanGrace'];
    assert.equal(resolvePrunerOptions({ orphanGrace: maxMs }).orphanGraceMs, maxMs);
    assert.deepEqual(issuesFor('reconcile.orphanGrace', maxMs + 1), libraryIssues(() => resolvePrunerOptions({ orphanGrace: maxMs + 1 }, 'reconcile.')));
    // The floors the agent once raised above the library's (1s) are the library's now.
    assert.equal(loadAgentConfig({ host, flags: { images: { pullActivityTimeout: 100 }, reconcile: { period: '100ms' } } }).images.pullActivityTimeoutMs, 100);
  });

  it('engine.host accepts exactly the addresses DOCKER_HOST may hold (engine/connect.ts parseDockerHost)', () => {
    for (const address of ['unix:///run/docker.sock', 'tcp://10.0.0.5:2376', 'tcp://engine', 'http://engine:2375/', 'unix://relative', 'tcp://engine:70000', 'ssh://engine', 'ssh://me@engine:2222', 'https://engine', 'ftp://engine', 'tcp://:2375']) {
      const endpoint = parseDockerHost(address);
      const issues = issuesFor('engine.host', address);
      if (endpoint === undefined) assert.match(issues[0]?.rule ?? '', /must be unix:\/\/\/path\/to\/socket, tcp:\/\/host\[:port\], https:\/\/host\[:port\] or ssh:\/\/\[user@\]host\[:port\] \(from flags\)/, address);
      else assert.deepEqual(loadAgentConfig({ host, flags: { engine: { host: address } } }).engine, engineOptionsOf(endpoint), address);
    }
  });
});
