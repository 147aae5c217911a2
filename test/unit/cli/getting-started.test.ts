import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { resolveAgentAddress } from '../../../src/agent/client.js';
import { CONFIG_ENV_VARS, CONFIG_KEY_KINDS } from '../../../src/agent/config.js';
import { chooseLogFormat, createAgentLogger } from '../../../src/agent/daemon.js';
import { schemaIssues } from '../../../src/agent/http/errors.js';
import { buildOpenApiDocument } from '../../../src/agent/http/openapi.js';
import { RFC3339_PATTERN } from '../../../src/agent/http/schemas.js';
import type { PruneView } from '../../../src/agent/http/views.js';
import { ValidationError } from '../../../src/common/errors.js';
import { BERTH_VERSION } from '../../../src/common/version.js';
import { renderPruneReport } from '../../../src/cli/prune.js';
import { Writable } from 'node:stream';

const root = new URL('../../../', import.meta.url);

describe('getting started', () => {
  test('the version berth states is package.json\'s, in the OpenAPI document too', async () => {
    const manifest = JSON.parse(await readFile(new URL('package.json', root), 'utf8')) as { version: string };
    assert.equal(BERTH_VERSION, manifest.version);
    assert.equal((buildOpenApiDocument() as { info: { version: string } }).info.version, manifest.version);
  });

  test('the agent logs pretty lines on a terminal and JSON otherwise, unless told', () => {
    assert.equal(chooseLogFormat('auto', true), 'pretty');
    assert.equal(chooseLogFormat(undefined, true), 'pretty');
    assert.equal(chooseLogFormat('auto', false), 'json');
    assert.equal(chooseLogFormat('json', true), 'json');
    assert.equal(chooseLogFormat('pretty', false), 'pretty');
  });

  test('a pretty agent log line has the level and the message in words, and its fields; a JSON one is an object', () => {
    const written = (format: 'json' | 'pretty'): string => {
      let text = '';
      const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => ((text += chunk.toString()), done()) });
      createAgentLogger(sink, 'info', { format }).info({ agentId: 'a-1' }, 'agent listening');
      return text;
    };
    assert.match(written('pretty'), /^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\] INFO: agent listening \{"agentId":"a-1"\}\n$/);
    assert.deepEqual(JSON.parse(written('json')).msg, 'agent listening');
  });

  test('an API pattern failure names the form, never the regular expression', () => {
    const issues = schemaIssues({ validation: [{ instancePath: '/since', keyword: 'pattern', params: { pattern: RFC3339_PATTERN }, message: `must match pattern "${RFC3339_PATTERN}"` }], validationContext: 'querystring' });
    assert.deepEqual(issues, [{ field: 'since', rule: 'must be an RFC 3339 time, such as 2024-05-01T10:00:00Z or 2024-05-01T12:00:00.123+02:00' }]);
    const unknown = schemaIssues({ validation: [{ instancePath: '/x', keyword: 'pattern', params: { pattern: '^a+$' }, message: 'must match pattern "^a+$"' }] });
    assert.doesNotMatch(unknown[0]!.rule, /\^|\$/);
  });

  test('prune --dry-run says what would be removed and reclaimed, never that it was', () => {
    const view = (dryRun: boolean): PruneView => ({
      containers: { ids: ['a'.repeat(64)], reclaimedBytes: 2048 },
      networks: { ids: [], names: [], reclaimedBytes: 0 },
      volumes: { ids: [], names: [], reclaimedBytes: 0 },
      images: { ids: [], reclaimedBytes: 0, untagged: [] },
      kept: [],
      failed: [],
      dryRun,
      cancelled: false,
      filters: [],
      reclaimedBytes: 2048,
    });
    const dry = renderPruneReport(view(true));
    assert.match(dry, /^Would remove container a{12}$/m);
    assert.match(dry, /^KIND +WOULD REMOVE +WOULD RECLAIM$/m);
    assert.match(dry, /^Dry run, nothing removed: 2 KiB would be reclaimed$/m);
    assert.doesNotMatch(dry, /REMOVED|Total reclaimed/);
    const real = renderPruneReport(view(false));
    assert.match(real, /^KIND +REMOVED +RECLAIMED$/m);
    assert.match(real, /^Total reclaimed space: 2 KiB$/m);
  });
});

describe('the token error suggests BERTH_DATA_DIR and --token', () => {
  test('with BERTH_HOST at a socket elsewhere, the token beside the socket is used', async () => {
    const home = await mkdtemp(path.join(tmpdir(), 'berth-token-'));
    try {
      const agentDir = path.join(home, 'srv');
      await mkdir(agentDir);
      await writeFile(path.join(agentDir, 'token'), 'beside\n');
      const address = await resolveAgentAddress({ BERTH_HOST: `unix://${agentDir}/agent.sock` }, {}, { uid: 1000, homedir: home });
      assert.equal(address.token, 'beside');
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  test('without a readable token the error names the files tried, BERTH_DATA_DIR and --token', async () => {
    const home = await mkdtemp(path.join(tmpdir(), 'berth-token-'));
    try {
      const user = { uid: 1000, homedir: home };
      const defaultToken = path.join(home, '.local', 'share', 'berth', 'token');
      await assert.rejects(resolveAgentAddress({ BERTH_HOST: 'unix:///srv/elsewhere/agent.sock' }, {}, user), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.equal(error.issues[0]!.field, 'token');
        const rule = error.issues[0]!.rule;
        assert.ok(rule.includes(`/srv/elsewhere/token (ENOENT) or ${defaultToken} (ENOENT)`), rule);
        assert.match(rule, /set BERTH_DATA_DIR=DIR, or pass --token TOKEN \(or set BERTH_TOKEN\)$/);
        return true;
      });
      // BERTH_DATA_DIR given: only its token is looked for.
      await assert.rejects(resolveAgentAddress({ BERTH_DATA_DIR: '/srv/given', BERTH_HOST: 'unix:///srv/elsewhere/agent.sock' }, {}, user), (error: unknown) => {
        assert.ok(error instanceof ValidationError);
        assert.match(error.issues[0]!.rule, /^cannot read the agent's token from \/srv\/given\/token \(ENOENT\)\. /);
        return true;
      });
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe('README: one table of every configuration key and environment variable', () => {
  /** The rows of the table under "Configuration keys and environment variables": [key, variables]. */
  async function tableRows(): Promise<Array<[string, string]>> {
    const readme = await readFile(new URL('README.md', root), 'utf8');
    const start = readme.indexOf('| key | environment variable | default | accepts | meaning |');
    assert.ok(start > 0, 'the table is in README.md');
    const lines = readme.slice(start).split('\n');
    const rows = lines.slice(2, lines.findIndex((line, i) => i > 1 && !line.startsWith('|')));
    return rows.map((row) => {
      const cells = row.split(' | ');
      return [cells[0]!.replace(/^\| /, ''), cells[1]!];
    });
  }

  /** Every source file under src/. */
  async function sources(dir = new URL('src/', root)): Promise<string[]> {
    const entries = await readdir(dir, { withFileTypes: true });
    const nested = await Promise.all(entries.map((e) => (e.isDirectory() ? sources(new URL(`${e.name}/`, dir)) : e.name.endsWith('.ts') ? readFile(new URL(e.name, dir), 'utf8').then((t) => [t]) : [])));
    return nested.flat();
  }

  test('every configuration key is a row, with its environment variable', async () => {
    const rows = await tableRows();
    for (const key of Object.keys(CONFIG_KEY_KINDS)) {
      const row = rows.find(([k]) => k === `\`${key}\``);
      assert.ok(row, `no row for ${key}`);
      assert.ok(row[1].includes(`\`${CONFIG_ENV_VARS[key]}\``), `${key}: ${row[1]}`);
    }
  });

  test('every environment variable src reads is in the table', async () => {
    const variables = new Set<string>();
    for (const text of await sources()) {
      for (const match of text.matchAll(/\benv(?:\?)?\.([A-Z][A-Z0-9_]+)/g)) variables.add(match[1]!);
      for (const match of text.matchAll(/_ENV = '([A-Z][A-Z0-9_]+)'/g)) variables.add(match[1]!);
    }
    // HOME is the user's home directory, documented as `~`.
    variables.delete('HOME');
    assert.ok(variables.has('BERTH_ENGINE_HOST') && variables.has('BERTH_CLEANUP_TIMEOUT'), [...variables].join(', '));
    const documented = (await tableRows()).map(([, cell]) => cell).join(' ');
    for (const variable of variables) assert.ok(documented.includes(`\`${variable}\``), `${variable} is not in the table`);
  });
});
