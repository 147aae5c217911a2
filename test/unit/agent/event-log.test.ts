import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isBerthError, ValidationError } from '../../../src/common/errors.js';
import { AgentEvents, type AgentEvent } from '../../../src/agent/events.js';
import { agentEventStream, eventResume } from '../../../src/agent/http/streams.js';
import { eventsSince } from '../../../src/cli/events.js';
import { openStore, type Store } from '../../../src/state/index.js';

let dir: string;
let counter = 0;
const freshStore = (): Store => openStore(path.join(dir, `events-${++counter}`, 'berth.db'));
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

before(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'berth-events-'));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const removed = (n: number, atMs = Date.UTC(2026, 0, 1) + n * 1000) => ({ type: 'image.removed' as const, imageId: `sha256:${n}`, at: new Date(atMs).toISOString() });

/** Reads a stream's server-sent events until `count` have come (or the deadline destroys it). */
async function readEvents(stream: NodeJS.ReadableStream & { destroy(error?: Error): void }, count: number): Promise<AgentEvent[]> {
  const deadline = setTimeout(() => stream.destroy(new Error(`fewer than ${count} events within 10 s`)), 10_000);
  const events: AgentEvent[] = [];
  let text = '';
  try {
    for await (const chunk of stream) {
      text += String(chunk);
      let end: number;
      while ((end = text.indexOf('\n\n')) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        const data = block.split('\n').find((line) => line.startsWith('data: '));
        if (data) events.push(JSON.parse(data.slice(6)) as AgentEvent);
      }
      if (events.length >= count) break;
    }
  } finally {
    clearTimeout(deadline);
  }
  return events;
}

describe('the event log', () => {
  it('gives increasing ids that go on after a reopen and are never reused after a trim', () => {
    const file = path.join(dir, 'reopen', 'berth.db');
    const first = openStore(file);
    const events = new AgentEvents({ log: first.events });
    const seen: AgentEvent[] = [];
    events.subscribe((event) => seen.push(event));
    for (let n = 1; n <= 3; n++) events.emit(removed(n));
    assert.deepEqual(seen.map((e) => e.id), [1, 2, 3]);
    // Everything trimmed: the next id is still 4, not 1.
    assert.equal(first.events.trim(Date.now() + 1, 100), 3);
    first.close();
    const second = openStore(file);
    const again = new AgentEvents({ log: second.events });
    const later: AgentEvent[] = [];
    again.subscribe((event) => later.push(event));
    again.emit(removed(4));
    assert.equal(later[0]!.id, 4);
    second.close();
  });

  it('trims by age and by count, and remembers the newest trimmed time', () => {
    const store = freshStore();
    const base = Date.UTC(2026, 0, 1);
    for (let n = 1; n <= 10; n++) store.events.append(base + n * 1000, JSON.stringify(removed(n, base + n * 1000)));
    // Older than base + 3.5 s: events 1 to 3.
    assert.equal(store.events.trim(base + 3500, 1000), 3);
    assert.deepEqual(store.events.bounds(), { firstKeptId: 4, lastId: 10, trimmedThroughMs: base + 3000 });
    // Keep the newest 4: 7 to 10.
    assert.equal(store.events.trim(base, 4), 3);
    assert.deepEqual(store.events.bounds(), { firstKeptId: 7, lastId: 10, trimmedThroughMs: base + 6000 });
    assert.equal(store.events.trim(base, 4), 0, 'nothing more to trim');
    store.close();
  });

  it('replays from an id within the window, and refuses one before it with BERTH_EVENTS_EXPIRED', () => {
    const store = freshStore();
    const events = new AgentEvents({ log: store.events });
    for (let n = 1; n <= 10; n++) events.emit(removed(n));
    store.events.trim(0, 5);
    assert.equal(events.replayStart({ afterId: 5 }), 5, 'the next event, 6, is kept');
    assert.deepEqual(events.replayPage(5).map((e) => e.id), [6, 7, 8, 9, 10]);
    assert.deepEqual(events.replayPage(8).map((e) => [e.id, e.type]), [[9, 'image.removed'], [10, 'image.removed']]);
    assert.throws(() => events.replayStart({ afterId: 4 }), (e: unknown) => isBerthError(e, 'BERTH_EVENTS_EXPIRED') && /oldest kept is 6/.test(e.message));
    // An id from the future (another database) replays nothing and goes on live.
    assert.equal(events.replayStart({ afterId: 99 }), 10);
    store.close();
  });

  it('replays from a time, and refuses a time before the newest trimmed event', () => {
    const store = freshStore();
    const events = new AgentEvents({ log: store.events });
    const base = Date.UTC(2026, 0, 1);
    for (let n = 1; n <= 6; n++) events.emit(removed(n, base + n * 1000));
    assert.equal(events.replayStart({ afterMs: base + 3000 }), 3, 'events after the time: 4 on');
    assert.equal(events.replayStart({ afterMs: base + 99_000 }), 6, 'a time after every event: live only');
    store.events.trim(base + 2500, 100);
    assert.throws(() => events.replayStart({ afterMs: base + 1500 }), (e: unknown) => isBerthError(e, 'BERTH_EVENTS_EXPIRED'));
    assert.equal(events.replayStart({ afterMs: base + 2000 }), 2);
    store.close();
  });

  it('an agent without a log numbers events in memory and refuses any replay', () => {
    const events = new AgentEvents();
    const seen: AgentEvent[] = [];
    events.subscribe((event) => seen.push(event));
    events.emit(removed(1));
    events.emit(removed(2));
    assert.deepEqual(seen.map((e) => e.id), [1, 2]);
    assert.throws(() => events.replayStart({ afterId: 0 }), (e: unknown) => isBerthError(e, 'BERTH_EVENTS_EXPIRED'));
  });

  it('an event the log cannot take is still sent live, without an id, and the failure is logged once', () => {
    const warnings: string[] = [];
    let failing = true;
    const log = {
      append: () => {
        if (failing) throw new Error('SQLITE_FULL');
        return 7;
      },
      after: () => [],
      idBefore: () => 0,
      bounds: () => ({ firstKeptId: 1, lastId: 0, trimmedThroughMs: undefined }),
      trim: () => 0,
    };
    const events = new AgentEvents({ log, logger: { ...quiet, warn: (_o: unknown, message: string) => void warnings.push(message) } });
    const seen: AgentEvent[] = [];
    events.subscribe((event) => seen.push(event));
    events.emit(removed(1));
    events.emit(removed(2));
    failing = false;
    events.emit(removed(3));
    assert.deepEqual(seen.map((e) => e.id), [undefined, undefined, 7]);
    assert.equal(warnings.length, 1);
  });
});

describe('a resumed event stream', () => {
  it('replays the backlog in pages, then the live events, each once and in order', async () => {
    const store = freshStore();
    const events = new AgentEvents({ log: store.events });
    // More than one replay page (500), so the replay is paced by the reader.
    for (let n = 1; n <= 1200; n++) events.emit(removed(n));
    const stream = agentEventStream({ events, replayAfterId: 100, logger: quiet, maxBufferedBytes: 16 * 1024 * 1024 });
    // Live events while the replay has not been read yet: held, then sent after the backlog.
    events.emit(removed(1201));
    events.emit(removed(1202));
    const received = await readEvents(stream, 1102);
    stream.destroy();
    assert.deepEqual(received.map((e) => e.id), Array.from({ length: 1102 }, (_, i) => 101 + i));
    store.close();
  });

  it('a replay whose next events are trimmed while it is paced ends with an in-stream BERTH_EVENTS_EXPIRED, skipping nothing', async () => {
    const store = freshStore();
    const events = new AgentEvents({ log: store.events });
    for (let n = 1; n <= 1200; n++) events.emit(removed(n));
    const stream = agentEventStream({ events, replayAfterId: 0, logger: quiet, maxBufferedBytes: 16 * 1024 * 1024 });
    // The first page is buffered; the rest waits for the reader. Meanwhile the log keeps only its newest 100.
    events.trim({ maxAgeMs: 3_600_000, maxCount: 100 });
    let text = '';
    for await (const chunk of stream) text += String(chunk);
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((match) => Number(match[1]));
    assert.deepEqual(ids, Array.from({ length: ids.length }, (_, i) => i + 1), 'the events sent are the first ones, in order, with no gap');
    assert.ok(ids.length < 1100, `the replay stopped at the gap (sent ${ids.length})`);
    assert.match(text, /event: error\ndata: \{"error":\{"code":"BERTH_EVENTS_EXPIRED"/);
    store.close();
  });

  it('a stream that is not resumed sends only what comes after it', async () => {
    const store = freshStore();
    const events = new AgentEvents({ log: store.events });
    events.emit(removed(1));
    const stream = agentEventStream({ events, logger: quiet });
    events.emit(removed(2));
    const received = await readEvents(stream, 1);
    stream.destroy();
    assert.deepEqual(received.map((e) => e.id), [2]);
    store.close();
  });
});

describe('where a stream resumes', () => {
  it('Last-Event-ID wins over since; since is an id or an RFC 3339 time', () => {
    assert.equal(eventResume(undefined, undefined), undefined);
    assert.deepEqual(eventResume('42', '7'), { afterId: 42 });
    assert.deepEqual(eventResume(undefined, '7'), { afterId: 7 });
    assert.deepEqual(eventResume(undefined, '2026-01-01T00:00:00Z'), { afterMs: Date.UTC(2026, 0, 1) });
  });

  it('refuses a Last-Event-ID that is not an event id, naming the header', () => {
    for (const bad of ['', 'x', '-1', '01', '1.5', ['1', '2']]) {
      assert.throws(() => eventResume(bad, undefined), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === 'last-event-id', `refused ${JSON.stringify(bad)}`);
    }
  });
});

describe('berth events --since', () => {
  const now = Date.UTC(2026, 0, 1, 12);
  it('passes an event id on, and turns a time (RFC 3339, Unix seconds, a duration ago) into RFC 3339', () => {
    assert.equal(eventsSince('42', now), '42');
    assert.equal(eventsSince('1767225600', now), '2026-01-01T00:00:00.000000000Z');
    assert.equal(eventsSince('10m', now), '2026-01-01T11:50:00.000Z');
    assert.equal(eventsSince('2026-01-01T10:00:00+01:00', now), '2026-01-01T10:00:00+01:00');
  });

  it('refuses anything else, naming the flag', () => {
    for (const bad of ['soon', '-5', '2026-01-01', '']) {
      assert.throws(() => eventsSince(bad, now), (e: unknown) => e instanceof ValidationError && e.issues[0]!.field === '--since', `refused ${JSON.stringify(bad)}`);
    }
  });
});
