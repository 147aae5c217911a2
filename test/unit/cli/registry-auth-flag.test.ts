import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { flagForSpecField } from '../../../src/cli/flags.js';
import { specFromRunFlags } from '../../../src/cli/run.js';
import { ValidationError } from '../../../src/common/errors.js';

const BASE = { env: [], label: [], mount: [], capAdd: [], capDrop: [] };
const IO = { env: {}, stdin: new PassThrough() };

describe('--registry-auth', () => {
  test('names credentials configured in the agent, for a task the agent runs (submit, run -d)', () => {
    assert.deepEqual(specFromRunFlags('r.example.com/app:1', [], { ...BASE, registryAuth: 'ci-registry' }, IO, 'agent').registryAuth, { ref: 'ci-registry' });
    assert.equal(specFromRunFlags('r.example.com/app:1', [], BASE, IO, 'agent').registryAuth, undefined);
  });

  test('is refused for berth run itself, which pulls with the Docker configuration\'s credentials', () => {
    assert.throws(
      () => specFromRunFlags('r.example.com/app:1', [], { ...BASE, registryAuth: 'ci-registry' }, IO, 'engine'),
      (error: unknown) => error instanceof ValidationError && error.issues[0]!.field === '--registry-auth' && /use it with --detach \(-d\) or berth submit/.test(error.issues[0]!.rule),
    );
  });

  test('the agent\'s refusal of registryAuth.ref is named by the flag', () => {
    assert.equal(flagForSpecField('spec.registryAuth.ref'), '--registry-auth');
  });
});
