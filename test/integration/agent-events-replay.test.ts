import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { describe, test } from 'node:test';
import { isBerthError } from '../../src/common/errors.js';
import { type AgentEvent } from '../../src/agent/client.js';
import { hasEnded } from '../../src/state/tasks.js';
import { pollUntil, requireEngine, TEST_IMAGE, testEngine } from '../support/engine.js';
import { agentClientOf, agentTestFile, berth, httpGet, spawnBerth, writeAgentConfig } from '../support/agent.js';
import { TOKEN_FILE_NAME } from '../../src/agent/agent.js';

/**
 * Events that a client missed while it was away: replayed after Last-Event-ID or `since`, across an
 * agent restart, and refused with 410 once the window dropped them. A real agent process on the real
 * engine, through its real socket, the client library and the CLI.
 */
const engine = testEngine();
const { run, dirs, agents } = agentTestFile(engine);

/** Reads a subscription until `done` says so, then closes it; fails, naming what came, when the stream ends or a minute passes first. */
async function readUntil(subscription: AsyncIterable<AgentEvent> & { close(): void }, done: (seen: AgentEvent[]) => boolean): Promise<AgentEvent[]> {
  const seen: AgentEvent[] = [];
  const deadline = setTimeout(() => subscription.close(), 60_000);
  try {
    for await (const event of subscription) {
      seen.push(event);
      if (done(seen)) return seen;
    }
  } finally {
    clearTimeout(deadline);
    subscription.close();
  }
  throw new Error(`the event stream ended (or 60 s passed) before the expected events; it gave ${seen.map((e) => `${e.id} ${e.type}`).join(', ') || 'nothing'}`);
}

/** The first event of a stream resumed with the Last-Event-ID header (and a since it must lose to). */
function firstEventWithHeader(socketPath: string, token: string, lastEventId: number): Promise<AgentEvent> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/v1/events?since=0', headers: { authorization: `Bearer ${token}`, 'last-event-id': String(lastEventId) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
        const data = text.split('\n').find((line) => line.startsWith('data: '));
        if (data && text.includes('\n\n', text.indexOf(data))) {
          resolve(JSON.parse(data.slice(6)) as AgentEvent);
          req.destroy();
        }
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no event within 30 s')));
    req.once('error', reject);
    req.end();
  });
}

const endOf = (taskId: string) => (seen: AgentEvent[]): boolean => seen.some((e) => e.type === 'task.state' && e.taskId === taskId && hasEnded(e.state));

describe('resuming the agent\'s event stream', { skip: await requireEngine() }, () => {
  test('a client that reconnects with Last-Event-ID or since gets exactly what it missed, also after an agent restart', async () => {
    const dataDir = await dirs.make('berth-ev-');
    let agent = await agents.start(dataDir);
    let client = await agentClientOf(agent);
    const spec = { image: TEST_IMAGE, command: ['true'], labels: { ...run.labels } };

    // Seen live: the first task's events, each with an increasing id.
    const first = `${run.id}-first`;
    const live = await client.events();
    await client.submit({ id: first, spec });
    const seenLive = await readUntil(live, endOf(first));
    const ids = seenLive.map((e) => e.id!);
    assert.ok(ids.every((id, i) => Number.isInteger(id) && (i === 0 || id > ids[i - 1]!)), `increasing ids: ${ids.join(', ')}`);
    const lastSeen = ids[ids.length - 1]!;

    // Away: a second task runs and ends, and the agent restarts.
    const second = `${run.id}-second`;
    await client.submit({ id: second, spec });
    await pollUntil('the second task to end', async () => (hasEnded((await client.get(second)).state) ? true : undefined), { timeoutMs: 60_000, intervalMs: 100 });
    client.close();
    await agent.stop('SIGTERM');
    agent = await agents.start(dataDir);
    client = await agentClientOf(agent);

    // Back: since=<last id seen> replays the second task's whole life, after the first's, each once.
    const resumed = await readUntil(await client.events({ since: lastSeen }), endOf(second));
    const missed = resumed.filter((e) => e.type === 'task.state');
    assert.ok(resumed.every((e) => e.id! > lastSeen), 'nothing seen before is sent again');
    assert.deepEqual(
      missed.filter((e) => e.type === 'task.state' && e.taskId === second).map((e) => (e as { state: string }).state).slice(0, 1),
      ['pending'],
      'the replay starts with the second task\'s submission',
    );
    assert.ok(!resumed.some((e) => e.type === 'task.state' && e.taskId === first), 'the first task\'s events were seen before');
    const resumedIds = resumed.map((e) => e.id!);
    assert.deepEqual(resumedIds, [...resumedIds].sort((a, b) => a - b), 'in id order');

    assert.equal(new Set(resumedIds).size, resumedIds.length, 'each event once');

    // The header an EventSource sends when it reconnects gives the same replay (and wins over since).
    const token = (await readFile(path.join(dataDir, TOKEN_FILE_NAME), 'utf8')).trim();
    const viaHeader = await firstEventWithHeader(agent.socketPath, token, lastSeen);
    assert.equal(viaHeader.id, resumedIds[0]);

    // A since that is neither an id nor a time is refused, naming it.
    const refused = await httpGet(agent.socketPath, '/v1/events?since=not-an-id', token);
    assert.equal(refused.status, 400);
    assert.match(refused.body, /since/);

    // And through the CLI: `berth events --since <id> --json` prints the missed events first, then goes on live.
    const cli = spawnBerth(dataDir, ['events', '--since', String(lastSeen), '--json']);
    try {
      const printed = await pollUntil(
        'the CLI to print the second task\'s end',
        () => {
          const parsed = cli.stdout().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as AgentEvent);
          return endOf(second)(parsed) ? parsed : undefined;
        },
        { timeoutMs: 30_000 },
      );
      assert.deepEqual(printed.slice(0, resumed.length).map((e) => e.id), resumedIds, 'the CLI prints what the client replayed');
    } finally {
      cli.interrupt();
      assert.equal(await cli.closed, 0, cli.stderr());
    }
    client.close();
  });

  test('a client whose events were trimmed away is told so: 410 BERTH_EVENTS_EXPIRED, and the CLI exits 1 naming it', async () => {
    const dataDir = await dirs.make('berth-ew-');
    const config = await writeAgentConfig(dataDir, 'events:\n  maxCount: 100\n');
    const agent = await agents.start(dataDir, ['--config', config]);
    const client = await agentClientOf(agent);
    // Prunes that match nothing of anyone's, each announced as one event: 120 events, past the window of 100.
    const nothing = `label=io.berth.test-nothing=${run.id}`;
    // Their ids as the live stream gives them: whatever the agent announced before does not shift them.
    const live = await client.events();
    for (let i = 0; i < 120; i++) await client.prune({ filters: [nothing] });
    const pruneIds = (await readUntil(live, (seen) => seen.filter((e) => e.type === 'prune').length === 120)).filter((e) => e.type === 'prune').map((e) => e.id!);
    // The window is trimmed every few seconds: wait for it.
    const refusal = await pollUntil(
      'the event log to be trimmed to its window',
      async () => {
        try {
          (await client.events({ since: 1 })).close();
          return undefined;
        } catch (error) {
          return error;
        }
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    );
    assert.ok(isBerthError(refusal, 'BERTH_EVENTS_EXPIRED') && refusal.context.status === 410, String(refusal));
    assert.match(refusal.message, /no longer kept/);
    // The newest events are still there to resume from.
    const recent = await client.events({ since: pruneIds[114]! });
    const replayed = await readUntil(recent, (seen) => seen.some((e) => e.id === pruneIds[119]));
    assert.deepEqual(replayed.map((e) => e.id), pruneIds.slice(115));
    const cli = await berth(dataDir, ['events', '--since', '1']);
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /BERTH_EVENTS_EXPIRED|no longer kept/);
    client.close();
  });
});
