import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { numberPlaceholders } from '../../../src/state/postgres/connection.js';
import { postgresLocation, SCHEMA_NAME } from '../../../src/state/postgres/backend.js';
import { POSTGRES_MIGRATIONS, POSTGRES_SCHEMA_VERSION } from '../../../src/state/postgres/migrations.js';
import { MIGRATIONS, SCHEMA_VERSION } from '../../../src/state/migrations.js';
import { defaultStateSchema } from '../../../src/agent/config.js';

describe('the PostgreSQL store: translation', () => {
  it('numbers ? placeholders in order, leaving string literals and quoted identifiers alone', () => {
    assert.equal(numberPlaceholders('SELECT * FROM tasks WHERE id = ? AND state IN (?, ?) LIMIT ?'), 'SELECT * FROM tasks WHERE id = $1 AND state IN ($2, $3) LIMIT $4');
    assert.equal(numberPlaceholders(`SELECT '?' AS "what?", x FROM t WHERE y = ?`), `SELECT '?' AS "what?", x FROM t WHERE y = $1`);
    assert.equal(numberPlaceholders(`SELECT 'it''s ?' FROM t WHERE a = ? AND b = ?`), `SELECT 'it''s ?' FROM t WHERE a = $1 AND b = $2`);
    assert.equal(numberPlaceholders('SELECT 1'), 'SELECT 1');
  });

  it('accepts plain lower-case identifiers as schema names, and nothing that would need quoting', () => {
    for (const good of ['berth_agent', '_x', 'a1', 'b'.repeat(63)]) assert.ok(SCHEMA_NAME.test(good), good);
    for (const bad of ['', 'Berth', '1abc', 'a-b', 'a;drop', 'a b', '"x"', 'b'.repeat(64)]) assert.ok(!SCHEMA_NAME.test(bad), bad);
  });

  it('derives the default schema from the node id in cluster mode, always a valid name', () => {
    assert.equal(defaultStateSchema(undefined), 'berth_agent');
    assert.equal(defaultStateSchema('Node-7.eu'), 'berth_agent_node_7_eu');
    const long = defaultStateSchema('n'.repeat(64));
    assert.ok(SCHEMA_NAME.test(long) && long.length === 63, long);
  });

  it('shows a server and schema as the location, never the password', () => {
    const location = postgresLocation({ url: 'postgres://berth:s3cret@db.example:5432/berth', schema: 'berth_agent' });
    assert.equal(location, 'postgres://db.example:5432/berth#berth_agent');
    assert.ok(!location.includes('s3cret'));
  });

  it('keeps the PostgreSQL schema at the SQLite schema\'s version', () => {
    assert.equal(POSTGRES_SCHEMA_VERSION, SCHEMA_VERSION, 'a SQLite migration needs its PostgreSQL step under the same number (src/state/postgres/migrations.ts)');
    assert.ok(POSTGRES_MIGRATIONS.every((m) => MIGRATIONS.some((s) => s.version === m.version)), 'every PostgreSQL step has a SQLite one of the same number');
  });
});
