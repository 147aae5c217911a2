import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BerthError } from '../../../src/common/errors.js';
import { classifyEngineError, commandFailureIn, commandFailureOf, engineCertainlyDidNotAct, engineMessage, forcedRemovalConflict } from '../../../src/engine/classify.js';

/** An error shaped as docker-modem builds it for a non-2xx answer. */
function httpError(statusCode: number, reason: string, json: unknown): Error {
  const cause = json && typeof json === 'object' && 'message' in json ? (json as { message: string }).message : '';
  return Object.assign(new Error(`(HTTP code ${statusCode}) ${reason} - ${cause} `), { statusCode, reason, json });
}

/** An error shaped as Node's net/http report a socket failure. */
function socketError(code: string, message = `connect ${code} /var/run/docker.sock`): Error {
  return Object.assign(new Error(message), { code });
}

const ctx = { operation: 'inspect container' };

describe('classifyEngineError', () => {
  const statusCases = [
    [404, 'no such container', 'BERTH_ENGINE_NOT_FOUND', false],
    [409, 'conflict', 'BERTH_ENGINE_CONFLICT', false],
    [304, 'container already started', 'BERTH_ENGINE_NOT_MODIFIED', false],
    [400, 'bad parameter', 'BERTH_ENGINE_BAD_REQUEST', false],
    [401, 'no such image', 'BERTH_ENGINE_FORBIDDEN', false],
    [403, 'client error, permission denied', 'BERTH_ENGINE_FORBIDDEN', false],
    [500, 'server error', 'BERTH_ENGINE_SERVER_ERROR', true],
    [503, 'node is not part of a swarm', 'BERTH_ENGINE_SERVER_ERROR', true],
  ] as const;
  for (const [status, reason, code, retryable] of statusCases) {
    it(`classifies HTTP ${status} as ${code} (retryable: ${retryable})`, () => {
      const error = classifyEngineError(httpError(status, reason, { message: 'engine says no' }), ctx);
      assert.ok(error instanceof BerthError);
      assert.equal(error.code, code);
      assert.equal(error.retryable, retryable);
      assert.equal(error.context.statusCode, status);
      assert.equal(error.context.operation, 'inspect container');
    });
  }

  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ENOENT', 'EPIPE']) {
    it(`classifies socket error ${code} as BERTH_ENGINE_UNAVAILABLE, retryable`, () => {
      const error = classifyEngineError(socketError(code), ctx);
      assert.equal(error.code, 'BERTH_ENGINE_UNAVAILABLE');
      assert.equal(error.retryable, true);
      assert.equal(error.context.socketError, code);
      assert.match(error.message, new RegExp(code));
    });
  }

  it('classifies a socket hang up without a code as BERTH_ENGINE_UNAVAILABLE', () => {
    assert.equal(classifyEngineError(new Error('socket hang up'), ctx).code, 'BERTH_ENGINE_UNAVAILABLE');
  });

  it('classifies a TimeoutError (the deadline signal fired) as BERTH_ENGINE_TIMEOUT with the deadline', () => {
    const error = classifyEngineError(new DOMException('The operation was aborted due to timeout', 'TimeoutError'), { ...ctx, deadlineMs: 250 });
    assert.equal(error.code, 'BERTH_ENGINE_TIMEOUT');
    assert.equal(error.retryable, true);
    assert.equal(error.context.deadlineMs, 250);
    assert.match(error.message, /250 ms/);
  });

  it('classifies an AbortError when the caller did not abort as BERTH_ENGINE_TIMEOUT', () => {
    const error = classifyEngineError(Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' }), {
      ...ctx,
      callerSignal: new AbortController().signal,
      deadlineMs: 100,
    });
    assert.equal(error.code, 'BERTH_ENGINE_TIMEOUT');
  });

  it('classifies any failure after the caller aborted as BERTH_CANCELLED, not retryable', () => {
    const controller = new AbortController();
    controller.abort();
    for (const cause of [Object.assign(new Error('aborted'), { name: 'AbortError' }), socketError('ECONNRESET'), httpError(500, 'server error', {})]) {
      const error = classifyEngineError(cause, { ...ctx, callerSignal: controller.signal });
      assert.equal(error.code, 'BERTH_CANCELLED');
      assert.equal(error.retryable, false);
      assert.equal(error.cause, cause);
    }
  });

  it('returns a BerthError unchanged', () => {
    const original = new BerthError('BERTH_INTERNAL', 'broken');
    assert.equal(classifyEngineError(original, ctx), original);
  });

  it('classifies an unknown failure as BERTH_ENGINE_UNAVAILABLE and keeps it as the cause', () => {
    const cause = new Error('something odd');
    const error = classifyEngineError(cause, ctx);
    assert.equal(error.code, 'BERTH_ENGINE_UNAVAILABLE');
    assert.equal(error.cause, cause);
    assert.match(error.message, /something odd/);
  });

  it("cleans dockerode's \"(HTTP code 404) no such container - \" wrapping off the engine's message", () => {
    const error = classifyEngineError(httpError(404, 'no such container', { message: 'No such container: abc' }), ctx);
    assert.equal(error.message, 'inspect container: No such container: abc');
  });
});

describe('engineCertainlyDidNotAct', () => {
  it('holds for a 503 (the engine says it is unavailable) and for a connection refused or a missing socket', () => {
    for (const cause of [httpError(503, 'service unavailable', { message: 'not ready' }), socketError('ECONNREFUSED'), socketError('ENOENT')]) {
      const error = classifyEngineError(cause, ctx);
      assert.equal(engineCertainlyDidNotAct(error), true, error.message);
      assert.equal(error.context.engineActed, false);
    }
  });

  it('does not hold when the engine may have acted: a 500, a reset or hang-up, a deadline, a cancellation', () => {
    const controller = new AbortController();
    controller.abort();
    const errors = [
      classifyEngineError(httpError(500, 'server error', { message: 'boom' }), ctx),
      classifyEngineError(socketError('ECONNRESET'), ctx),
      classifyEngineError(new Error('socket hang up'), ctx),
      classifyEngineError(new DOMException('timeout', 'TimeoutError'), { ...ctx, deadlineMs: 10 }),
      classifyEngineError(socketError('ECONNREFUSED'), { ...ctx, callerSignal: controller.signal }),
    ];
    for (const error of errors) assert.equal(engineCertainlyDidNotAct(error), false, error.message);
  });

  it('reads the classification, never the message: a 500 whose message reads "unavailable" may have acted', () => {
    assert.equal(engineCertainlyDidNotAct(new BerthError('BERTH_ENGINE_SERVER_ERROR', 'start exec: 503 service unavailable')), false);
    assert.equal(engineCertainlyDidNotAct(new Error('connect ECONNREFUSED')), false);
  });
});

describe('engineMessage', () => {
  it('takes the message from the JSON body', () => {
    assert.equal(engineMessage({ json: { message: ' name in use ' } }), 'name in use');
  });

  it('parses a JSON string body', () => {
    assert.equal(engineMessage({ json: '{"message":"No such image: x:1"}' }), 'No such image: x:1');
  });

  it('uses a plain-text body as it is', () => {
    assert.equal(engineMessage({ json: 'page not found\n' }), 'page not found');
  });

  it('uses a Buffer body as text', () => {
    assert.equal(engineMessage({ json: Buffer.from('raw text') }), 'raw text');
  });

  it('strips the wrapping from the error message when there is no body', () => {
    assert.equal(engineMessage({ message: '(HTTP code 409) conflict - Conflict. The name is in use ' }), 'Conflict. The name is in use');
  });

  it("falls back to dockerode's reason when the engine's body is empty (304)", () => {
    const failure = httpError(304, 'container already started', Buffer.alloc(0));
    assert.equal(engineMessage(failure), 'container already started');
  });
});

describe('forcedRemovalConflict', () => {
  it('reads a 409 to a forced removal as the engine finishing an earlier removal when the container is gone, removing, or still being killed', () => {
    for (const status of [undefined, 'removing', 'running', 'paused', 'restarting', 'dead'] as const) assert.equal(forcedRemovalConflict(status), 'removed', String(status));
  });

  it('reads it as a kill that raced the container’s own exit when the container is exited or created and nobody removes it: ask again', () => {
    for (const status of ['exited', 'created'] as const) assert.equal(forcedRemovalConflict(status), 'ask-again', status);
  });
});

describe('command-start failures', () => {
  const runc = (tail: string): string => `failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: ${tail}: unknown`;

  it('reads a command that is not on $PATH, or a path that does not exist, as not found (127)', () => {
    assert.deepEqual(commandFailureIn(runc('exec: "nosuch": executable file not found in $PATH')), {
      kind: 'not-found',
      command: 'nosuch',
      detail: 'exec: "nosuch": executable file not found in $PATH',
      exitCode: 127,
    });
    assert.equal(commandFailureIn(runc('exec: "/no/such": stat /no/such: no such file or directory'))?.exitCode, 127);
  });

  it('reads a command without execute permission as not executable (126)', () => {
    assert.deepEqual(commandFailureIn(runc('exec: "/etc/passwd": permission denied')), {
      kind: 'not-executable',
      command: '/etc/passwd',
      detail: 'exec: "/etc/passwd": permission denied',
      exitCode: 126,
    });
  });

  it('reads an exec\'s failure line (OCI runtime exec failed) the same way', () => {
    const line = 'OCI runtime exec failed: exec failed: unable to start container process: exec: "nosuch": executable file not found in $PATH: unknown\r\n';
    assert.equal(commandFailureIn(line)?.kind, 'not-found');
  });

  it('takes no other failure for a command failure: a mount\'s missing file, another exec error', () => {
    assert.equal(commandFailureIn(runc('error mounting "/a" to rootfs at "/b": stat /a: no such file or directory')), undefined);
    assert.equal(commandFailureIn(runc('exec: "/bin/x": exec format error')), undefined);
    assert.equal(commandFailureIn('no such container'), undefined);
  });

  it('puts the failure on the classified start error, with the engine\'s code unchanged', () => {
    const error = classifyEngineError(httpError(400, 'bad parameter', { message: runc('exec: "nosuch": executable file not found in $PATH') }), { operation: 'start container' });
    assert.equal(error.code, 'BERTH_ENGINE_BAD_REQUEST');
    assert.equal(commandFailureOf(error)?.exitCode, 127);
    assert.equal(commandFailureOf(classifyEngineError(httpError(400, 'bad parameter', { message: 'invalid mount' }), { operation: 'start container' })), undefined);
    assert.equal(commandFailureOf(new Error('exec: "nosuch": executable file not found in $PATH')), undefined);
  });
});
