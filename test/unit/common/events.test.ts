import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Events } from '../../../src/common/events.js';
import type { Logger } from '../../../src/common/logger.js';

interface Map {
  removed: { id: string };
  sweep: { count: number };
}

function recordingLogger(): Logger & { warnings: Array<Record<string, unknown>> } {
  const warnings: Array<Record<string, unknown>> = [];
  const noop = (): void => undefined;
  return { debug: noop, info: noop, error: noop, warn: (meta) => void warnings.push(meta), warnings };
}

describe('Events', () => {
  it('calls the listeners of a type, in subscription order, with the payload, and no listener of another type', () => {
    const events = new Events<Map>();
    const seen: string[] = [];
    events.on('removed', (e) => seen.push(`first ${e.id}`));
    events.on('removed', (e) => seen.push(`second ${e.id}`));
    events.on('sweep', (e) => seen.push(`sweep ${e.count}`));
    events.emit('removed', { id: 'a' });
    assert.deepEqual(seen, ['first a', 'second a']);
  });

  it('stops calling a listener once its unsubscribe ran, and a second unsubscribe does nothing', () => {
    const events = new Events<Map>();
    const seen: string[] = [];
    const unsubscribe = events.on('removed', (e) => seen.push(e.id));
    events.emit('removed', { id: 'a' });
    unsubscribe();
    unsubscribe();
    events.emit('removed', { id: 'b' });
    assert.deepEqual(seen, ['a']);
    assert.equal(events.hasListeners('removed'), false);
  });

  it('calls one function subscribed twice twice, and each unsubscribe removes one of them', () => {
    const events = new Events<Map>();
    let calls = 0;
    const listener = (): void => void calls++;
    const first = events.on('sweep', listener);
    events.on('sweep', listener);
    events.emit('sweep', { count: 1 });
    first();
    events.emit('sweep', { count: 2 });
    assert.equal(calls, 3);
  });

  it('logs a listener that throws and still calls the listeners after it; the publisher never sees the error', () => {
    const logger = recordingLogger();
    const events = new Events<Map>(logger);
    const seen: string[] = [];
    events.on('removed', () => {
      throw new Error('observer bug');
    });
    events.on('removed', (e) => seen.push(e.id));
    assert.doesNotThrow(() => events.emit('removed', { id: 'a' }));
    assert.deepEqual(seen, ['a']);
    assert.deepEqual(logger.warnings, [{ event: 'removed', reason: 'observer bug' }]);
  });

  it('calls a listener subscribed during an emit from the next emit on, not during it', () => {
    const events = new Events<Map>();
    const seen: string[] = [];
    events.on('removed', (e) => {
      seen.push(`outer ${e.id}`);
      if (e.id === 'a') events.on('removed', (later) => seen.push(`inner ${later.id}`));
    });
    events.emit('removed', { id: 'a' });
    events.emit('removed', { id: 'b' });
    assert.deepEqual(seen, ['outer a', 'outer b', 'inner b']);
  });
});
