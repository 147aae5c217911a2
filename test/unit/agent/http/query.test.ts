import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { typedQuery } from '../../../../src/agent/http/query.js';
import { listQuerySchema, logsQuerySchema } from '../../../../src/agent/http/schemas.js';

describe('typedQuery: a query string typed by its schema, never guessed at', () => {
  test('an integer only from text that is exactly one', () => {
    assert.deepEqual(typedQuery(listQuerySchema, { limit: '25' }), { limit: 25 });
    assert.deepEqual(typedQuery(listQuerySchema, { limit: '0' }), { limit: 0 });
    assert.deepEqual(typedQuery(listQuerySchema, { limit: '-3' }), { limit: -3 });
    for (const text of ['0x10', '1e3', ' 5', '5 ', '5.0', '+5', '05', '', 'five', 'Infinity', 'NaN']) {
      assert.deepEqual(typedQuery(listQuerySchema, { limit: text }), { limit: text }, text);
    }
  });
  test('a boolean only from true or false', () => {
    assert.deepEqual(typedQuery(logsQuerySchema, { follow: 'true' }), { follow: true });
    assert.deepEqual(typedQuery(logsQuerySchema, { follow: 'false' }), { follow: false });
    for (const text of ['1', '0', 'yes', 'TRUE', 'on', '']) assert.deepEqual(typedQuery(logsQuerySchema, { follow: text }), { follow: text }, text);
  });
  test('an array from one or repeated parameters; a repeated scalar stays an array for the schema to refuse', () => {
    assert.deepEqual(typedQuery(listQuerySchema, { state: 'running' }), { state: ['running'] });
    assert.deepEqual(typedQuery(listQuerySchema, { state: ['running', 'exited'] }), { state: ['running', 'exited'] });
    assert.deepEqual(typedQuery(listQuerySchema, { limit: ['1', '2'] }), { limit: ['1', '2'] });
    assert.deepEqual(typedQuery(logsQuerySchema, { since: ['a', 'b'] }), { since: ['a', 'b'] });
  });
  test('strings and unknown parameters are left as they came', () => {
    assert.deepEqual(typedQuery(logsQuerySchema, { stream: 'stdout', since: '2024-05-01T10:00:00Z' }), { stream: 'stdout', since: '2024-05-01T10:00:00Z' });
    assert.deepEqual(typedQuery(listQuerySchema, { extra: '5', toString: 'x' }), { extra: '5', toString: 'x' });
    assert.equal(typedQuery(listQuerySchema, null), null);
  });
});
