// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

/** Layers may only import inward: cli → agent → tasks/images/reconcile/prune → spec/engine → common. */
const restrict = (patterns) => ({ 'no-restricted-imports': ['error', { patterns }] });
const dockerode = { group: ['dockerode', 'docker-modem'], message: 'Only src/engine talks to the Docker API.' };
/** Only agent/http serves the API; the rest of the agent reaches it through buildServer and serveAgent. */
const fastify = { group: ['fastify', '@fastify/*'], message: 'Only src/agent/http serves HTTP.' };
/** Only the cluster store speaks to PostgreSQL. */
const pgClient = { group: ['pg', 'pg-*'], message: 'Only src/cluster talks to PostgreSQL.' };

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-floating-promises': 'error',
      'import-x/no-cycle': 'error',
    },
  },
  { files: ['src/**/*.ts'], ignores: ['src/engine/**', 'src/cluster/**'], rules: restrict([dockerode, fastify, pgClient]) },
  { files: ['src/cluster/**/*.ts'], rules: restrict([{ group: ['../*/**', '!../common/**', '!../spec/**'], message: 'cluster/ depends on common (and spec types) only.' }, dockerode, fastify]) },
  { files: ['src/common/**/*.ts'], rules: restrict([{ group: ['../*/**', '!../common/**'], message: 'common/ depends on nothing.' }, dockerode, fastify, pgClient]) },
  { files: ['src/engine/**/*.ts', 'src/spec/**/*.ts'], rules: restrict([{ group: ['../tasks/**', '../images/**', '../reconcile/**', '../prune/**', '../state/**', '../agent/**', '../cli/**'], message: 'Dependencies point inward.' }, fastify, pgClient]) },
  { files: ['src/groups/**/*.ts', 'src/tasks/**/*.ts', 'src/images/**/*.ts', 'src/reconcile/**/*.ts', 'src/prune/**/*.ts', 'src/state/**/*.ts'], rules: restrict([{ group: ['../agent/**', '../cli/**'], message: 'Dependencies point inward.' }, dockerode, fastify, pgClient]) },
  { files: ['src/agent/**/*.ts'], ignores: ['src/agent/http/**'], rules: restrict([{ group: ['../cli/**'], message: 'Nothing imports cli.' }, dockerode, fastify, pgClient]) },
  { files: ['src/agent/http/**/*.ts'], rules: restrict([{ group: ['../../cli/**'], message: 'Nothing imports cli.' }, dockerode, pgClient]) },
  // node:test's test() and describe() return promises the runner awaits itself.
  { files: ['test/**/*.ts'], rules: { '@typescript-eslint/no-floating-promises': 'off' } },
  { files: ['**/*.js'], ...tseslint.configs.disableTypeChecked },
  { files: ['**/*.js'], languageOptions: { globals: { URL: 'readonly', process: 'readonly', console: 'readonly' } } },
);
