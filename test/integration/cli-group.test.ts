import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { BERTH_CLI, cleanEnv, tempDirs } from '../support/agent.js';
import { requireEngine, TEST_IMAGE, testRun, testEngine } from '../support/engine.js';
import { groupLeftovers, removeRunObjects } from '../support/groups.js';

const engine = testEngine();
const run = testRun(engine);
const dirs = tempDirs();
const NOTHING = { containers: [], volumes: [], networks: [] };

/** `berth group run -f FILE -l <run label>`, as a user runs it; `input` goes to its stdin. */
function groupRun(file: string, options: { input?: string; onOutput?: (stdout: string, kill: (signal: NodeJS.Signals) => void) => void } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [...BERTH_CLI, 'group', 'run', '-f', file, '-l', `berth-test.run=${run.id}`], { stdio: ['pipe', 'pipe', 'pipe'], env: cleanEnv() });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    options.onOutput?.(stdout, (signal) => child.kill(signal));
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.end(options.input ?? '');
  return once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr }));
}

describe('berth group run (the CLI, in the foreground on the engine)', { skip: await requireEngine() }, () => {
  after(async () => {
    await removeRunObjects(engine, run);
    await dirs.removeAll();
  });

  test('runs a YAML group file, streams every task\'s output prefixed by its padded name, and exits with the main task\'s code', async () => {
    const dir = await dirs.make('berth-group-');
    const file = path.join(dir, 'group.yaml');
    await writeFile(
      file,
      [
        'name: cli-demo',
        'network:',
        '  ports: [{ container: 8080 }]',
        'tasks:',
        '  - name: setup',
        '    lifecycle: prestart',
        `    image: ${TEST_IMAGE}`,
        '    command: [sh, -c, "echo preparing; echo served > /alloc/index.html"]',
        '  - name: web',
        '    lifecycle: sidecar',
        `    image: ${TEST_IMAGE}`,
        '    command: [sh, -c, "exec httpd -f -p 8080 -h /alloc"]',
        '    stopSignal: SIGKILL',
        '  - name: client',
        `    image: ${TEST_IMAGE}`,
        '    command: [sh, -c, "until wget -qO- http://127.0.0.1:8080/index.html 2>/dev/null; do sleep 0.1; done; echo oops >&2; printf no-newline; exit 4"]',
        '    timeout: 60s',
        '',
      ].join('\n'),
    );
    const result = await groupRun(file);
    assert.equal(result.code, 4, result.stderr);
    assert.deepEqual(result.stdout.split('\n'), ['setup  | preparing', 'client | served', 'client | no-newline', '']);
    assert.match(result.stderr, /^client \| oops$/m);
    assert.match(result.stderr, /^berth: group cli-demo-[0-9a-f]{8} publishes 127\.0\.0\.1:\d+->8080\/tcp$/m);
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('reads a JSON group from stdin with -f -, and a group that cannot start exits 125 with nothing left behind', async () => {
    const ok = await groupRun('-', { input: JSON.stringify({ name: 'stdin', network: { mode: 'none' }, tasks: [{ name: 'only', image: TEST_IMAGE, command: ['echo', 'from-stdin'] }] }) });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, 'only | from-stdin\n');
    const missing = await groupRun('-', { input: JSON.stringify({ name: 'missing', tasks: [{ name: 'main', image: 'berth-test/no-such-image:nope', pull: 'never' }] }) });
    assert.equal(missing.code, 125, missing.stderr);
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('a bad group file is a usage error naming the field, before anything is made', async () => {
    const result = await groupRun('-', { input: 'name: bad\ntasks:\n  - name: a\n    image: x\n    resources: { memory: lots }\n' });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /tasks\[0\]\.resources\.memory/);
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });

  test('Ctrl-C stops the group, removes everything and exits 130', async () => {
    let interrupted = false;
    const result = await groupRun('-', {
      input: JSON.stringify({ name: 'interrupted', tasks: [{ name: 'main', image: TEST_IMAGE, command: ['sh', '-c', 'echo running; exec sleep 600'], stopSignal: 'SIGKILL' }] }),
      onOutput: (stdout, kill) => {
        if (!interrupted && stdout.includes('main | running')) {
          interrupted = true;
          kill('SIGINT');
        }
      },
    });
    assert.ok(interrupted, result.stderr);
    assert.equal(result.code, 130, result.stderr);
    // The exit came after the clean-up: nothing is left at that moment.
    assert.deepEqual(await groupLeftovers(engine, run), NOTHING);
  });
});
