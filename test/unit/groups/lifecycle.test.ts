import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { couldNotStart, planGroup, type MemberPhase, type MemberStatus } from '../../../src/groups/lifecycle.js';
import { liveGroupState } from '../../../src/groups/state.js';
import type { Lifecycle } from '../../../src/spec/group.js';
import type { EndState } from '../../../src/tasks/end-state.js';

const m = (name: string, lifecycle: Lifecycle, phase: MemberPhase, end?: EndState): MemberStatus => ({ name, lifecycle, phase, ...(end === undefined ? {} : { end }) });
const SUCCESS: EndState = { kind: 'success', exitCode: 0 };
const CANCELLED: EndState = { kind: 'cancelled' };
const go = { stopRequested: false };
const stop = { stopRequested: true };

describe('planGroup: the order of a group\'s tasks', () => {
  test('starts only the prestart tasks (all of them) while any has not ended', () => {
    const members = [m('main', 'main', 'waiting'), m('proxy', 'sidecar', 'waiting'), m('a', 'prestart', 'waiting'), m('b', 'prestart', 'waiting')];
    assert.deepEqual(planGroup(members, go), { start: ['a', 'b'], stop: [], skip: [] });
  });

  test('waits while a prestart task runs, even when another has succeeded', () => {
    const members = [m('main', 'main', 'waiting'), m('a', 'prestart', 'ended', SUCCESS), m('b', 'prestart', 'running')];
    assert.deepEqual(planGroup(members, go), { start: [], stop: [], skip: [] });
  });

  test('starts the main tasks and the sidecars together once every prestart task succeeded', () => {
    const members = [m('main', 'main', 'waiting'), m('proxy', 'sidecar', 'waiting'), m('a', 'prestart', 'ended', SUCCESS)];
    assert.deepEqual(planGroup(members, go), { start: ['main', 'proxy'], stop: [], skip: [] });
  });

  test('a group without prestart tasks starts its main tasks and sidecars at once', () => {
    assert.deepEqual(planGroup([m('web', 'main', 'waiting'), m('log', 'sidecar', 'waiting')], go), { start: ['web', 'log'], stop: [], skip: [] });
  });

  test('does nothing while the main tasks run, and a sidecar that ends on its own does not end the group', () => {
    const members = [m('web', 'main', 'running'), m('log', 'sidecar', 'ended', { kind: 'failed', exitCode: 1 })];
    assert.deepEqual(planGroup(members, go), { start: [], stop: [], skip: [] });
  });

  test('a main task that fails while another runs ends nothing yet: the others run to their own end', () => {
    const members = [m('a', 'main', 'ended', { kind: 'failed', exitCode: 2 }), m('b', 'main', 'running'), m('log', 'sidecar', 'running')];
    assert.deepEqual(planGroup(members, go), { start: [], stop: [], skip: [] });
  });
});

describe('planGroup: how a group ends', () => {
  test('stops the running sidecars once every main task has ended, and skips a sidecar not started', () => {
    const members = [m('web', 'main', 'ended', SUCCESS), m('log', 'sidecar', 'running'), m('late', 'sidecar', 'waiting'), m('going', 'sidecar', 'stopping')];
    assert.deepEqual(planGroup(members, go), { start: [], stop: ['log'], skip: ['late'] });
  });

  test('ends in success once every task ended and every main task succeeded, whatever the sidecars\' ends', () => {
    const members = [m('setup', 'prestart', 'ended', SUCCESS), m('web', 'main', 'ended', SUCCESS), m('log', 'sidecar', 'ended', CANCELLED)];
    assert.deepEqual(planGroup(members, go).end, { kind: 'success', exitCode: 0 });
  });

  test('the first main task that did not succeed decides the end, with its exit code', () => {
    const members = [m('a', 'main', 'ended', SUCCESS), m('b', 'main', 'ended', { kind: 'failed', exitCode: 3 }), m('c', 'main', 'ended', { kind: 'oom', exitCode: 137, hint: 'raise it' })];
    assert.deepEqual(planGroup(members, go).end, { kind: 'failed', exitCode: 3, task: 'b' });
  });

  test('a lost main task ends the group lost, with the reason', () => {
    const members = [m('a', 'main', 'ended', { kind: 'lost', reason: 'the container vanished' })];
    assert.deepEqual(planGroup(members, go).end, { kind: 'lost', reason: 'the container vanished', task: 'a' });
  });

  test('a timed-out main task ends the group timed-out with its exit code', () => {
    const members = [m('a', 'main', 'ended', { kind: 'timed-out', exitCode: 143, timeoutMs: 1000 })];
    assert.deepEqual(planGroup(members, go).end, { kind: 'timed-out', exitCode: 143, task: 'a' });
  });

  test('no end while a sidecar is still stopping', () => {
    const members = [m('web', 'main', 'ended', SUCCESS), m('log', 'sidecar', 'stopping')];
    assert.deepEqual(planGroup(members, go), { start: [], stop: [], skip: [] });
  });
});

describe('planGroup: failures and stops', () => {
  test('a failed prestart task fails the group: running tasks are stopped, waiting ones never start', () => {
    const members = [m('a', 'prestart', 'ended', { kind: 'failed', exitCode: 3 }), m('b', 'prestart', 'running'), m('main', 'main', 'waiting'), m('proxy', 'sidecar', 'waiting')];
    assert.deepEqual(planGroup(members, go), { start: [], stop: ['b'], skip: ['main', 'proxy'] });
  });

  test('once everything has ended, a failed prestart task gives the group a failed end with its exit code', () => {
    const members = [m('a', 'prestart', 'ended', { kind: 'failed', exitCode: 3 }), m('b', 'prestart', 'ended', CANCELLED), m('main', 'main', 'ended', CANCELLED)];
    assert.deepEqual(planGroup(members, go).end, { kind: 'failed', exitCode: 3, reason: 'prestart task a ended failed with exit code 3', task: 'a' });
  });

  test('a prestart task that runs out of memory fails the group too', () => {
    const members = [m('a', 'prestart', 'ended', { kind: 'oom', exitCode: 137, hint: 'raise it' }), m('main', 'main', 'ended', CANCELLED)];
    assert.equal(planGroup(members, go).end?.kind, 'failed');
  });

  test('a task berth could not start fails the group at once, even a main task while others run', () => {
    const refused: EndState = { kind: 'failed', exitCode: 127, reason: 'exec: "nope": executable file not found' };
    assert.equal(couldNotStart(refused), true);
    assert.equal(couldNotStart({ kind: 'failed', exitCode: 127 }), false);
    const members = [m('a', 'main', 'ended', refused), m('b', 'main', 'running'), m('log', 'sidecar', 'starting')];
    assert.deepEqual(planGroup(members, go), { start: [], stop: ['b', 'log'], skip: [] });
    const ended = [m('a', 'main', 'ended', refused), m('b', 'main', 'ended', CANCELLED), m('log', 'sidecar', 'ended', CANCELLED)];
    assert.deepEqual(planGroup(ended, go).end, { kind: 'failed', exitCode: 127, reason: 'main task a could not start: exec: "nope": executable file not found', task: 'a' });
  });

  test('a stop stops every starting or running task, skips the waiting ones, and does not stop a stopping one again', () => {
    const members = [m('a', 'prestart', 'running'), m('b', 'prestart', 'starting'), m('c', 'prestart', 'stopping'), m('main', 'main', 'waiting')];
    assert.deepEqual(planGroup(members, stop), { start: [], stop: ['a', 'b'], skip: ['main'] });
  });

  test('a stopped group ends cancelled, also when its stop cancelled a prestart task', () => {
    const members = [m('a', 'prestart', 'ended', CANCELLED), m('main', 'main', 'ended', CANCELLED)];
    assert.deepEqual(planGroup(members, stop).end, { kind: 'cancelled' });
    const running = [m('web', 'main', 'ended', CANCELLED), m('log', 'sidecar', 'ended', CANCELLED)];
    assert.deepEqual(planGroup(running, stop).end, { kind: 'cancelled' });
  });

  test('a prestart task cancelled without a stop of the group (someone stopped that task) fails the group', () => {
    const members = [m('a', 'prestart', 'ended', CANCELLED), m('main', 'main', 'waiting')];
    assert.deepEqual(planGroup(members, go), { start: [], stop: [], skip: ['main'] });
  });
});

describe('liveGroupState', () => {
  test('starting while prestart tasks run or main tasks start; running once every main task started', () => {
    assert.equal(liveGroupState([m('a', 'prestart', 'running'), m('main', 'main', 'waiting')], false), 'starting');
    assert.equal(liveGroupState([m('main', 'main', 'starting'), m('b', 'main', 'running')], false), 'starting');
    assert.equal(liveGroupState([m('main', 'main', 'running'), m('b', 'main', 'ended', SUCCESS), m('log', 'sidecar', 'starting')], false), 'running');
  });

  test('stopping once asked to stop, once a prestart failed or a task could not start, and once every main task ended', () => {
    assert.equal(liveGroupState([m('main', 'main', 'running')], true), 'stopping');
    assert.equal(liveGroupState([m('a', 'prestart', 'ended', { kind: 'failed', exitCode: 1 }), m('main', 'main', 'waiting')], false), 'stopping');
    assert.equal(liveGroupState([m('main', 'main', 'ended', { kind: 'failed', exitCode: 125, reason: 'no image' }), m('b', 'main', 'running')], false), 'stopping');
    assert.equal(liveGroupState([m('main', 'main', 'ended', SUCCESS), m('log', 'sidecar', 'running')], false), 'stopping');
  });
});
