import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import type { TaskSpec } from '../../src/spec/schema.js';
import { runToEnd } from '../../src/tasks/run.js';
import { useProxiedDriver } from '../support/proxied-driver.js';
import { readAll, requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';

const direct = testEngine();
const run = testRun(direct);
const ATTACH_PATH = /^\/containers\/[^/]+\/attach$/;
const LINES = 200;

/** Numbered lines on stdout and every tenth on stderr too, slowly enough that a cut attach leaves most of them to come. */
const spec = (tty = false): TaskSpec => ({
  image: TEST_IMAGE,
  labels: { ...run.labels },
  tty,
  command: ['sh', '-c', `i=0; while [ $i -lt ${LINES} ]; do i=$((i+1)); echo "line $i"; [ $((i % 10)) -eq 0 ] && echo "err $i" >&2; usleep 5000; done; exit 4`],
});

const expected = (prefix: string, every = 1): string[] =>
  Array.from({ length: LINES / every }, (_, i) => `${prefix} ${(i + 1) * every}`);

describe('attached output cut before the task ends is made whole from the engine log', { skip: await requireEngine() }, () => {
  const faulty = useProxiedDriver(run, { driver: { retry: { attempts: 5, initialDelayMs: 20, maxDelayMs: 500 }, relistPeriodMs: 300 } });

  // 3 bytes into the first frame's header, inside a frame's payload, and after a few whole lines.
  for (const afterBodyBytes of [3, 13, 120]) {
    test(`an attach cut after ${afterBodyBytes} bytes still delivers every line exactly once, in order`, { timeout: 60_000 }, async () => {
      const rule = faulty.proxy.addRule({ method: 'POST', path: ATTACH_PATH, fault: { kind: 'dropAfterBodyBytes', afterBodyBytes }, times: 1 });
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      const texts = Promise.all([readAll(stdout), readAll(stderr)]);
      const result = await runToEnd(faulty.driver, spec(), { stdout, stderr });
      stdout.end();
      stderr.end();
      const [out, err] = await texts;
      assert.equal(rule.fired, 1, 'the attach was cut');
      assert.deepEqual(result.end, { kind: 'failed', exitCode: 4 });
      assert.deepEqual(out.split('\n').filter(Boolean), expected('line'));
      assert.deepEqual(err.split('\n').filter(Boolean), expected('err', 10));
    });
  }

  test('a cut TTY attach is made whole too (one merged stream)', { timeout: 60_000 }, async () => {
    const rule = faulty.proxy.addRule({ method: 'POST', path: ATTACH_PATH, fault: { kind: 'dropAfterBodyBytes', afterBodyBytes: 50 }, times: 1 });
    const stdout = new PassThrough();
    const text = readAll(stdout);
    const result = await runToEnd(faulty.driver, spec(true), { stdout });
    stdout.end();
    assert.equal(rule.fired, 1, 'the attach was cut');
    assert.deepEqual(result.end, { kind: 'failed', exitCode: 4 });
    const lines = (await text).split(/\r?\n/).filter(Boolean);
    assert.deepEqual(lines.filter((l) => l.startsWith('line ')), expected('line'));
    assert.deepEqual(lines.filter((l) => l.startsWith('err ')), expected('err', 10));
  });
});
