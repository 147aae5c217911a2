import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { LABELS } from '../../src/common/labels.js';
import { silentLogger } from '../../src/common/logger.js';
import { createAgent, type AgentRuntime } from '../../src/agent/agent.js';
import { AgentClient } from '../../src/agent/client.js';
import type { AgentEvent } from '../../src/agent/events.js';
import { serveAgent, type ServingAgent } from '../../src/agent/http/serve.js';
import { runBerth, testHost } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testContainerBody, testRun, testEngine } from '../support/engine.js';
import { buildUniqueImage, pushImage, removeRunImages, requireRegistryTools, startTestRegistries, untag, type TestRegistries } from '../support/registry.js';

const engine = testEngine();
const run = testRun(engine);

describe('the agent collects its garbage', { skip: (await requireEngine()) || requireRegistryTools() }, () => {
  let registries: TestRegistries;
  let dataDir: string;
  let runtime: AgentRuntime;
  let serving: ServingAgent;
  let client: AgentClient;
  const events: AgentEvent[] = [];
  // An image only this run uses (its own id), which the agent pulls: only images berth pulled are pruned.
  const local = `berth-test/gc-${run.id}:1`;
  let image: string;

  before(async () => {
    registries = await startTestRegistries();
    image = `${registries.plain.host}/berth-it/${run.id}/gc:1`;
    await buildUniqueImage(local, run.id, 64 * 1024);
    await pushImage(local, [image]);
    // Gone from the engine entirely, so that the agent's pull is the only name it has.
    await untag(engine, [image, local]);
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'berth-gc-'));
    runtime = await createAgent(
      {
        flags: {
          dataDir,
          socketPath: path.join(dataDir, 'agent.sock'),
          images: { cleanup: true, removeDelay: '1h' },
          reconcile: { enabled: true, period: '1s', creationGrace: '1s' },
        },
        host: testHost(dataDir),
      },
      silentLogger,
    );
    runtime.events.subscribe((event) => events.push(event));
    serving = await serveAgent(runtime, { processMetrics: false });
    client = AgentClient.connect({ host: `unix://${serving.socketPath}`, token: runtime.token });
  });

  after(async () => {
    await runtime.supervisor.idle();
    await serving.close();
    await runtime.close();
    await run.cleanup();
    await untag(engine, [image]).catch(() => undefined);
    await removeRunImages(engine, run.id);
    await registries.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const berthLabels = (taskId: string): Record<string, string> => ({ [LABELS.managed]: 'true', [LABELS.ownerId]: runtime.agentId, [LABELS.taskId]: taskId });

  test('the reconciler removes a running container of this agent that no task tracks, and nothing else', async () => {
    const dangling = await engine.createContainer(run.name('dangling'), testContainerBody(run, { cmd: ['sleep', '60'], labels: berthLabels(`${run.id}-ghost`) }));
    const foreign = await engine.createContainer(run.name('foreign'), testContainerBody(run, { cmd: ['sleep', '60'] }));
    const otherAgent = await engine.createContainer(run.name('other-agent'), testContainerBody(run, { cmd: ['sleep', '60'], labels: { ...berthLabels(`${run.id}-other`), [LABELS.ownerId]: 'another-agent' } }));
    for (const id of [dangling, foreign, otherAgent]) await engine.startContainer(id);
    const removed = await pollUntil('the reconciler to remove the dangling container', () =>
      events.find((e) => e.type === 'container.reconciled' && e.containerId === dangling && !e.dryRun), { timeoutMs: 30_000, intervalMs: 100 });
    assert.equal(removed.type === 'container.reconciled' && removed.taskId, `${run.id}-ghost`);
    await assert.rejects(engine.inspectContainer(dangling), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_NOT_FOUND'));
    assert.equal((await engine.inspectContainer(foreign)).running, true);
    assert.equal((await engine.inspectContainer(otherAgent)).running, true);
    assert.match(await client.metrics(), /berth_reconciler_removals_total 1\b/);
  });

  test('POST /v1/prune removes stopped containers of ended tasks and unheld images, keeps foreign ones', async () => {
    const task = await client.submit({ spec: { image, command: ['true'], labels: { ...run.labels } } });
    await pollUntil('the task to end', async () => ((await client.get(task.id)).state === 'exited' ? true : undefined), { timeoutMs: 30_000, intervalMs: 100 });
    await runtime.supervisor.idle();
    const stale = await engine.createContainer(run.name('stale'), testContainerBody(run, { cmd: ['true'], labels: berthLabels(`${run.id}-no-record`) }));
    const foreignStopped = await engine.createContainer(run.name('foreign-stopped'), testContainerBody(run, { cmd: ['true'] }));

    const dry = await client.prune({ dryRun: true });
    assert.deepEqual(dry.containers.ids, [stale]);
    assert.equal((await engine.inspectContainer(stale)).id, stale, 'a dry run removes nothing');

    const report = await client.prune({ filters: [`label=${run.labelFilter}`] });
    assert.deepEqual(report.containers.ids, [stale]);
    assert.ok(report.images.untagged.includes(image), `untagged ${JSON.stringify(report.images)}`);
    assert.equal(report.images.ids.length, 1);
    await assert.rejects(engine.inspectImage(image), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_NOT_FOUND'));
    await assert.rejects(engine.inspectContainer(stale), (e: unknown) => isBerthError(e, 'BERTH_ENGINE_NOT_FOUND'));
    assert.equal((await engine.inspectContainer(foreignStopped)).id, foreignStopped);
    assert.ok((await engine.inspectImage(TEST_IMAGE)).id, 'the shared image stays');
    assert.ok(events.some((e) => e.type === 'prune' && e.removed.containers === 1));
  });

  test('berth prune (the CLI) reports and removes, with --dry-run, --filter and --json', async () => {
    const stale = await engine.createContainer(run.name('cli-stale'), testContainerBody(run, { cmd: ['true'], labels: { ...berthLabels(`${run.id}-cli`), team: 'blue' } }));
    const other = await engine.createContainer(run.name('cli-other'), testContainerBody(run, { cmd: ['true'], labels: { ...berthLabels(`${run.id}-cli-2`), team: 'red' } }));
    const env = { ...process.env, BERTH_HOST: `unix://${serving.socketPath}`, BERTH_TOKEN: runtime.token };
    // Not spawnSync: the agent runs in this process and must keep answering.
    const cli = (args: string[]) => runBerth(args, env);
    const dry = await cli(['prune', '--dry-run', '--filter', 'label=team=blue']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`Would remove container ${stale.slice(0, 12)}`));
    // A dry run removed nothing, and its output does not say it did.
    assert.match(dry.stdout, /^KIND +WOULD REMOVE +WOULD RECLAIM$/m);
    assert.match(dry.stdout, /^Dry run, nothing removed: .+ would be reclaimed$/m);
    assert.doesNotMatch(dry.stdout, /REMOVED|Removed|Total reclaimed space/);
    assert.equal((await engine.inspectContainer(stale)).id, stale);
    const json = await cli(['prune', '--json', '--filter', 'label!=team=red']);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual((JSON.parse(json.stdout) as { containers: { ids: string[] } }).containers.ids, [stale]);
    assert.equal((await engine.inspectContainer(other)).id, other);
    const bad = await cli(['prune', '--filter', 'nonsense=1']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /label, label!, until/);
  });

  test('an unknown prune filter is refused with the accepted list', async () => {
    await assert.rejects(client.prune({ filters: ['dangling=true'] }), (e: unknown) => isBerthError(e, 'BERTH_VALIDATION') && /label/.test(e.message) && /until/.test(e.message));
  });
});
