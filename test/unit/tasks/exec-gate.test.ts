/**
 * ExecSetupGate against a scripted engine: a freeze (pause) of a container never overlaps an exec
 * being set up in it (from its create until the engine shows it running or ended), whichever
 * comes first; other containers are not held up. The shared engine is never used: a freeze during
 * an exec's setup wedges a real one.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ExecInspect } from '../../../src/engine/engine.js';
import { execGateOf, ExecSetupGate } from '../../../src/tasks/exec-gate.js';

/** A script of one container: what happened, in order, and execs whose state the test sets. */
function scripted() {
  const log: string[] = [];
  const execs = new Map<string, ExecInspect>();
  let next = 0;
  const deferred = () => {
    let resolve = (): void => undefined;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  };
  return {
    log,
    /** An exec start the test lets resolve (`started.resolve()`); its process shows running once `running(id)`. */
    startExec(name: string) {
      const started = deferred();
      const id = `exec-${++next}`;
      execs.set(id, { id, running: false, pid: 0, exitCode: null, containerId: 'c1' });
      const start = async (): Promise<{ id: string }> => {
        log.push(`${name} create`);
        await started.promise;
        log.push(`${name} started`);
        return { id };
      };
      return { id, start, started };
    },
    running(id: string) {
      log.push(`${id} running`);
      execs.set(id, { ...execs.get(id)!, running: true, pid: 42 });
    },
    ended(id: string) {
      log.push(`${id} ended`);
      execs.set(id, { ...execs.get(id)!, running: false, pid: 42, exitCode: 0 });
    },
    inspectExec: (id: string): Promise<ExecInspect> => Promise.resolve(execs.get(id)!),
    freeze(name: string) {
      return async (): Promise<string> => {
        log.push(`${name} freeze`);
        return name;
      };
    },
  };
}

const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

describe('ExecSetupGate', () => {
  test('a pause waits for an exec being set up until the engine shows its process running', async () => {
    const gate = new ExecSetupGate({ pollMs: 1 });
    const engine = scripted();
    const exec = engine.startExec('exec');
    const session = gate.setup('c1', exec.start, engine.inspectExec);
    await settle();
    const frozen = gate.freeze('c1', engine.freeze('pause'));
    await settle();
    exec.started.resolve();
    assert.deepEqual(await session, { id: exec.id });
    await settle();
    assert.deepEqual(engine.log, ['exec create', 'exec started'], 'no freeze while the exec started but is not running yet');
    engine.running(exec.id);
    assert.equal(await frozen, 'pause');
    assert.deepEqual(engine.log, ['exec create', 'exec started', `${exec.id} running`, 'pause freeze']);
  });

  test('an exec that ended (it never ran long enough to be seen running) releases the pause too', async () => {
    const gate = new ExecSetupGate({ pollMs: 1 });
    const engine = scripted();
    const exec = engine.startExec('exec');
    exec.started.resolve();
    await gate.setup('c1', exec.start, engine.inspectExec);
    const frozen = gate.freeze('c1', engine.freeze('pause'));
    await settle();
    assert.equal(engine.log.includes('pause freeze'), false);
    engine.ended(exec.id);
    await frozen;
    assert.equal(engine.log.at(-1), 'pause freeze');
  });

  test('an exec asked for while a pause is waiting or under way waits for it (a stream of execs cannot starve a pause)', async () => {
    const gate = new ExecSetupGate({ pollMs: 1 });
    const engine = scripted();
    const first = engine.startExec('first');
    const firstSession = gate.setup('c1', first.start, engine.inspectExec);
    await settle();
    const frozen = gate.freeze('c1', engine.freeze('pause'));
    const second = engine.startExec('second');
    second.started.resolve();
    const secondSession = gate.setup('c1', second.start, engine.inspectExec);
    await settle();
    assert.deepEqual(engine.log, ['first create'], 'the second exec waits behind the waiting pause');
    first.started.resolve();
    await firstSession;
    engine.running(first.id);
    await frozen;
    await secondSession;
    assert.deepEqual(engine.log, ['first create', 'first started', `${first.id} running`, 'pause freeze', 'second create', 'second started']);
    engine.ended(second.id);
  });

  test('an exec whose start fails releases the pause at once', async () => {
    const gate = new ExecSetupGate({ pollMs: 1 });
    const engine = scripted();
    let fail = (): void => undefined;
    const failing = gate.setup('c1', () => new Promise<{ id: string }>((_resolve, reject) => (fail = () => reject(new Error('refused')))), engine.inspectExec);
    const frozen = gate.freeze('c1', engine.freeze('pause'));
    await settle();
    assert.deepEqual(engine.log, []);
    fail();
    await assert.rejects(failing, /refused/);
    assert.equal(await frozen, 'pause');
  });

  test('an exec that never shows running holds pauses back only until the setup deadline', async () => {
    const gate = new ExecSetupGate({ pollMs: 1, setupMaxMs: 30 });
    const engine = scripted();
    const exec = engine.startExec('exec');
    exec.started.resolve();
    await gate.setup('c1', exec.start, engine.inspectExec);
    assert.equal(gate.settingUp('c1'), 1);
    assert.equal(await gate.freeze('c1', engine.freeze('pause')), 'pause');
    assert.equal(gate.settingUp('c1'), 0);
  });

  test('execs and pauses of other containers do not wait for each other', async () => {
    const gate = new ExecSetupGate({ pollMs: 1 });
    const engine = scripted();
    const exec = engine.startExec('exec');
    const session = gate.setup('c1', exec.start, engine.inspectExec);
    assert.equal(await gate.freeze('c2', engine.freeze('other pause')), 'other pause');
    exec.started.resolve();
    await session;
    engine.running(exec.id);
  });

  test('a failed pause lets execs through again', async () => {
    const gate = new ExecSetupGate({ pollMs: 1 });
    const engine = scripted();
    await assert.rejects(gate.freeze('c1', () => Promise.reject(new Error('no'))), /no/);
    const exec = engine.startExec('exec');
    exec.started.resolve();
    assert.deepEqual(await gate.setup('c1', exec.start), { id: exec.id });
    assert.equal(gate.settingUp('c1'), 0, 'without inspectExec, held until the start resolves only');
  });

  test('execGateOf gives one gate per engine object', () => {
    const a = {};
    assert.equal(execGateOf(a), execGateOf(a));
    assert.notEqual(execGateOf(a), execGateOf({}));
  });
});
