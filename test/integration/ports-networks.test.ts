import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { TaskSpec } from '../../src/spec/schema.js';
import { TaskDriver } from '../../src/tasks/driver.js';
import { pollUntil, readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { spawnBerth } from '../support/agent.js';
import { canBind, fetchPage, httpdCommand } from '../support/http.js';

/**
 * A single task's published ports and named networks through the library, against the real engine:
 * a dynamic port reachable from the host at the address the handle reports and free again after
 * the task; a task on two test-made networks with an endpoint (and its alias) on each.
 */

const engine = testEngine();
const run = testRun(engine);
const driver = new TaskDriver({ engine, ownerId: `test-${run.id}` });
const spec = (overrides: Partial<TaskSpec>): TaskSpec => ({ image: TEST_IMAGE, pull: 'never', labels: { ...run.labels }, ...overrides });
/** busybox httpd serving one page, `hello <name>`, on `port`. */
const httpd = (name: string, port: number): string[] => ['sh', '-c', httpdCommand(name, port)];
const networks: string[] = [];



describe('published ports and named networks through the library', { skip: await requireEngine() }, () => {
  after(async () => {
    await run.cleanup();
    for (const name of networks) await engine.removeNetwork(name).catch(() => undefined);
  });

  test('a dynamic port is reachable from the host at the published address, and free again after the task', async () => {
    const handle = await driver.start(spec({ command: httpd('dynamic', 8080), network: 'bridge', ports: [{ container: 8080 }] }), { output: 'engine-log' });
    let published;
    try {
      published = await handle.mappedPort(8080);
      assert.equal(published.hostIp, '127.0.0.1');
      assert.ok(published.host > 0);
      assert.deepEqual(await handle.ports(), [published]);
      const page = await pollUntil('the task to answer on its published port', () => fetchPage(published!.hostIp, published!.host), { timeoutMs: 30_000, intervalMs: 100 });
      assert.equal(page, 'hello dynamic\n');
    } finally {
      await handle.stop({ graceMs: 0 });
      await handle.destroy();
    }
    assert.equal(await canBind(published.hostIp, published.host), true, 'the host port is free once the task is gone');
  });

  test('berth run -p publishes a dynamic port on the address given, says where, and the page is reachable there', async () => {
    const cli = spawnBerth('/nonexistent-berth-data', ['run', '-l', run.labelFilter, '-p', '127.0.0.1::8082', '--stop-timeout', '1', '--pull', 'never', TEST_IMAGE, ...httpd('cli', 8082)]);
    try {
      const line = await pollUntil('berth run to say the published address', async () => /berth: published 127\.0\.0\.1:(\d+)->8082\/tcp/.exec(cli.stderr()) ?? undefined, { timeoutMs: 60_000, intervalMs: 100 });
      const host = Number(line[1]);
      assert.equal(await pollUntil('the page on the published port', () => fetchPage('127.0.0.1', host), { timeoutMs: 30_000, intervalMs: 100 }), 'hello cli\n');
    } finally {
      cli.interrupt();
      await cli.closed;
    }
    assert.deepEqual(await run.leftovers(), [], 'berth run removed its container');
  });

  test('a task joins two named networks, with an endpoint and its alias on each, resolvable from another container', async () => {
    const [front, back] = [`berth-test-${run.id}-front`, `berth-test-${run.id}-back`];
    for (const name of [front, back]) {
      networks.push(name);
      await engine.createNetwork(name, { labels: { ...run.labels } });
    }
    const handle = await driver.start(
      spec({ command: httpd('joined', 8081), network: 'bridge', networks: [{ name: front, aliases: ['web-front'] }, { name: back, aliases: ['web-back', 'api'] }] }),
      { output: 'engine-log' },
    );
    try {
      const inspected = await engine.inspectContainer(handle.containerId);
      const byName = new Map(inspected.networks.map((n) => [n.name, n]));
      assert.deepEqual([...byName.keys()].sort(), [back, front].sort(), 'an endpoint on each network, and none on the default bridge');
      assert.ok(byName.get(front)!.aliases.includes('web-front'));
      assert.ok(byName.get(back)!.aliases.includes('web-back') && byName.get(back)!.aliases.includes('api'));
      // From another task on the second network (connected after the create), by alias.
      const client = await driver.start(spec({ command: ['sh', '-c', 'for i in $(seq 1 100); do wget -q -O- http://api:8081/index.html && exit 0; sleep 0.1; done; exit 1'], network: 'bridge', networks: [{ name: back, aliases: [] }] }));
      const [stdout, end] = await Promise.all([readAll(client.stdout), client.wait()]);
      await client.destroy();
      assert.equal(end.kind, 'success');
      assert.equal(stdout, 'hello joined\n');
    } finally {
      await handle.stop({ graceMs: 0 });
      await handle.destroy();
    }
  });
});
