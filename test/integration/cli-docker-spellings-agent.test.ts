import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { agentProcesses, berth, spawnBerth, tempDirs, writeAgentConfig } from '../support/agent.js';
import { pollUntil, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

/**
 * Docker's spellings of issue 12 in the agent's commands, through the real binary against a real
 * agent and the real engine: submit -v through the agent's policy; events --filter keys; stats with
 * no ids; --format on ps, inspect, images, events and stats; -q and --no-trunc on images. (run's
 * spellings and --help: cli-docker-spellings-run; logs: cli-docker-spellings-logs.)
 */

const engine = testEngine();
const run = testRun(engine);
const RUN_LABEL = run.labelFilter;
const agents = agentProcesses();
const dirs = tempDirs();

after(async () => {
  await agents.killAll();
  await run.cleanup();
  await dirs.removeAll();
});

const skip = await requireEngine();

describe('the agent\'s commands in docker\'s spellings', { skip }, () => {
  let dataDir: string;
  let allowedDir: string;

  before(async () => {
    dataDir = await dirs.make('berth-spell-');
    allowedDir = await dirs.make('berth-spell-allowed-');
    const config = await writeAgentConfig(dataDir, `policy:\n  allowedBindSources: [${JSON.stringify(allowedDir)}]\n`);
    await agents.start(dataDir, ['--config', config]);
  });

  async function submit(args: string[]): Promise<string> {
    const result = await berth(dataDir, ['submit', '-l', RUN_LABEL, ...args]);
    assert.equal(result.code, 0, result.stderr);
    return result.stdout.trim();
  }

  async function waitForState(id: string, state: string): Promise<void> {
    await pollUntil(`task ${id} to be ${state}`, async () => ((await berth(dataDir, ['inspect', id, '--format', '{{.state}}'])).stdout === `${state}\n` ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
  }

  test('submit -v goes through the agent\'s bind policy as --mount does', async () => {
    const viaMount = await berth(dataDir, ['submit', '-l', RUN_LABEL, '--mount', 'type=bind,source=/etc,target=/x', TEST_IMAGE, 'true']);
    const viaVolume = await berth(dataDir, ['submit', '-l', RUN_LABEL, '-v', '/etc:/x', TEST_IMAGE, 'true']);
    assert.notEqual(viaMount.code, 0);
    assert.equal(viaVolume.code, viaMount.code);
    assert.match(viaVolume.stderr, /\/etc/);
    assert.equal(viaVolume.stderr.replace(/\[\d+\]/g, ''), viaMount.stderr.replace(/\[\d+\]/g, ''));
    const allowed = await submit(['-v', `${allowedDir}:/x:ro`, TEST_IMAGE, 'ls', '/x']);
    await waitForState(allowed, 'exited');
  });

  test('events --filter takes docker\'s keys and --format a template; an unknown key names the allowed ones', async () => {
    const bad = await berth(dataDir, ['events', '--filter', 'colour=red']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'berth: --filter[0]: unknown key "colour" (known: type=, event=, task=, image=, container=) [BERTH_VALIDATION]\n');
    const id = `spell-events-${run.id}`;
    const events = spawnBerth(dataDir, ['events', '--filter', 'type=task', '--filter', `task=${id}`, '--format', '{{.TaskID}} {{.Action}} {{.EndKind}}']);
    try {
      await pollUntil('events to subscribe', () => (events.stderr().includes('listening for events') ? true : undefined), { timeoutMs: 30_000 });
      await submit(['--name', id, TEST_IMAGE, 'sh', '-c', 'exit 2']);
      await pollUntil('the task to end on the event stream', () => (events.stdout().includes(`${id} exited`) ? true : undefined), { timeoutMs: 60_000 });
      assert.deepEqual(events.stdout().trimEnd().split('\n'), [`${id} pending `, `${id} starting `, `${id} running `, `${id} exited failed`]);
    } finally {
      events.interrupt();
      assert.equal(await events.closed, 0, events.stderr());
    }
  });

  test('ps and inspect take --format json, table templates and Go templates', async () => {
    const id = await submit(['-l', 'team=infra', TEST_IMAGE, 'sh', '-c', 'exit 3']);
    await waitForState(id, 'exited');
    const ps = (...args: string[]) => berth(dataDir, ['ps', '-a', '--filter', `label=${RUN_LABEL}`, '--filter', 'label=team', ...args]);

    const template = await ps('--format', '{{.Names}}|{{.State}}|{{.Label "team"}}|{{.Image}}');
    assert.equal(template.code, 0, template.stderr);
    assert.equal(template.stdout, `${id}|exited|infra|${TEST_IMAGE}\n`);
    const json = await ps('--format', 'json');
    const row = JSON.parse(json.stdout.trim()) as Record<string, unknown>;
    assert.equal(row.Names, id);
    assert.match(String(row.Status), /^Exited \(3\)/);
    assert.match(String(row.Labels), /team=infra/);
    const table = await ps('--format', 'table {{.Names}}\\t{{.Status}}');
    const [header, line] = table.stdout.split('\n');
    assert.match(header!, /^NAMES +STATUS$/);
    assert.match(line!, new RegExp(`^${id} +Exited \\(3\\)`));
    const unknown = await ps('--format', '{{.Size}}');
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /^berth: --format: unknown field "Size" in \{\{\.Size\}\} \(known: ID, Image, Command, CreatedAt, RunningFor, Status, State, Labels, Label, Names, ContainerID, ExitCode, Health, Ports, Start, Node\)/);

    const inspect = await berth(dataDir, ['inspect', id, '--format', '{{.state}} {{.exitCode}} {{json .spec.command}} {{index .spec.labels "team"}}']);
    assert.equal(inspect.stdout, 'exited 3 ["sh","-c","exit 3"] infra\n');
    assert.equal((await berth(dataDir, ['inspect', '-f', 'json', id])).stdout.split('\n').length, 2, 'one line');

  });

  test('with a task running: stats with no ids shows every running task; stats and images take --format, --no-trunc, images -q', async () => {
    const id = await submit([TEST_IMAGE, 'sleep', '60']);
    try {
      await waitForState(id, 'running');
      const stats = await berth(dataDir, ['stats', '--no-stream', '--format', '{{.Name}} {{.PIDs}}']);
      assert.equal(stats.code, 0, stats.stderr);
      assert.ok(stats.stdout.split('\n').includes(`${id} 1`), stats.stdout);
      const table = await berth(dataDir, ['stats', '--no-stream']);
      assert.match(table.stdout, /^TASK ID +CPU % +MEM USAGE \/ LIMIT +MEM % +NET I\/O +BLOCK I\/O +PIDS$/m);
      // A UUID is cut to docker's 12 characters; --no-trunc prints it whole.
      assert.match(table.stdout, new RegExp(`^${id.slice(0, 12)} `, 'm'));
      const full = await berth(dataDir, ['stats', '--no-stream', '--no-trunc', '--format', '{{.ID}} {{.Container}}']);
      assert.ok(full.stdout.split('\n').some((l) => /^\S+ [0-9a-f]{64}$/.test(l) && l.startsWith(`${id} `)), full.stdout);
      const json = await berth(dataDir, ['stats', '--no-stream', id, '--format', 'json']);
      const row = JSON.parse(json.stdout.trim()) as Record<string, string>;
      assert.deepEqual(Object.keys(row), ['ID', 'Name', 'Container', 'CPUPerc', 'MemUsage', 'MemPerc', 'NetIO', 'BlockIO', 'PIDs']);
      assert.equal(row.PIDs, '1');

      // The agent lists the images its tasks hold: this task's, while it runs.
      const images = await berth(dataDir, ['images', '--format', '{{.Repository}}:{{.Tag}} {{.ID}}']);
      assert.equal(images.code, 0, images.stderr);
      const imageLine = images.stdout.split('\n').find((l) => l.startsWith(`${TEST_IMAGE} `));
      assert.ok(imageLine, images.stdout);
      const shortId = imageLine.split(' ')[1]!;
      assert.match(shortId, /^[0-9a-f]{12}$/);
      const quiet = await berth(dataDir, ['images', '-q']);
      assert.ok(quiet.stdout.split('\n').includes(shortId), quiet.stdout);
      const fullIds = await berth(dataDir, ['images', '-q', '--no-trunc']);
      assert.ok(fullIds.stdout.split('\n').some((l) => l.startsWith(`sha256:${shortId}`) && l.length === 71), fullIds.stdout);
      const imageJson = (await berth(dataDir, ['images', '--format', 'json'])).stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { Repository: string; Tag: string });
      assert.ok(imageJson.some((i) => `${i.Repository}:${i.Tag}` === TEST_IMAGE));
    } finally {
      await berth(dataDir, ['stop', id]);
    }
  });
});
