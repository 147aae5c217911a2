import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeData, encodeData, parseAgentControl, parseClientControl } from '../../src/agent/stream-frames.js';

test('a data frame carries its stream and bytes both ways', () => {
  for (const stream of ['stdin', 'stdout', 'stderr'] as const) {
    const decoded = decodeData(encodeData(stream, Buffer.from('héllo\0')));
    assert.equal(decoded?.stream, stream);
    assert.deepEqual(decoded?.data, Buffer.from('héllo\0'));
  }
});

test('an empty or unknown data frame is ignored', () => {
  assert.equal(decodeData(Buffer.alloc(0)), undefined);
  assert.equal(decodeData(Buffer.from([7, 1, 2])), undefined);
});

test('a resize is checked and names the bad side', () => {
  assert.deepEqual(parseClientControl('{"type":"resize","rows":24,"cols":80}'), { type: 'resize', rows: 24, cols: 80 });
  assert.throws(() => parseClientControl('{"type":"resize","rows":0,"cols":80}'), (error: Error & { issues?: { field: string }[] }) => error.issues?.[0]?.field === 'rows');
  assert.throws(() => parseClientControl('{"type":"resize","rows":24,"cols":1.5}'), (error: Error & { issues?: { field: string }[] }) => error.issues?.[0]?.field === 'cols');
  assert.throws(() => parseClientControl('not json'), (error: Error & { issues?: { field: string }[] }) => error.issues?.[0]?.field === 'message');
  assert.throws(() => parseClientControl('{"type":"bogus"}'), (error: Error & { issues?: { field: string }[] }) => error.issues?.[0]?.field === 'type');
});

test('agent control messages: exit needs a number, unknown ones are ignored', () => {
  assert.deepEqual(parseAgentControl('{"type":"exit","exitCode":3}'), { type: 'exit', exitCode: 3 });
  assert.equal(parseAgentControl('{"type":"exit"}'), undefined);
  assert.equal(parseAgentControl('{"type":"later"}'), undefined);
  assert.equal(parseAgentControl('[]'), undefined);
  assert.equal(parseAgentControl('{'), undefined);
});
