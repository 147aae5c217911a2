import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ValidationError } from '../../../src/common/errors.js';
import { LABELS } from '../../../src/common/labels.js';
import { groupAliases, resolveAcceptedGroupSpec, resolveGroupSpec } from '../../../src/spec/group.js';
import { resolveTaskSpec } from '../../../src/spec/schema.js';
import { toCreatePlan } from '../../../src/spec/translate.js';

function issuesOf(work: () => unknown): Array<{ field: string; rule: string }> {
  try {
    work();
  } catch (error) {
    assert.ok(error instanceof ValidationError, String(error));
    return [...error.issues];
  }
  assert.fail('expected a ValidationError');
}

const fields = (work: () => unknown): string[] => issuesOf(work).map((i) => i.field).sort();

describe('group spec', () => {
  it('takes a group of full task specs, with main as the default lifecycle, a bridge network and /alloc as the shared directory', () => {
    const group = resolveGroupSpec({ name: 'g', tasks: [{ name: 'web', image: 'busybox', resources: { memory: '64m' } }, { name: 'proxy', lifecycle: 'sidecar', image: 'busybox' }] });
    assert.deepEqual(group.tasks.map((t) => [t.name, t.lifecycle, t.spec.resources.memoryBytes]), [['web', 'main', 64 * 1024 * 1024], ['proxy', 'sidecar', undefined]]);
    assert.equal(group.network.mode, 'bridge');
    assert.equal(group.sharedDir, '/alloc');
    assert.deepEqual(group.tasks[0]!.input, { image: 'busybox', resources: { memory: '64m' } }, 'the input keeps the task spec as given, without name and lifecycle');
    assert.equal(resolveGroupSpec({ name: 'g', sharedDir: false, tasks: [{ name: 'a', image: 'x' }] }).sharedDir, undefined);
  });

  it('names a member task\'s issues by their place in the group', () => {
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', tasks: [{ name: 'a', image: 'x' }, { name: 'b', image: 'x', resources: { memory: '1k' } }] })), ['tasks[1].resources.memory']);
  });

  it('refuses network settings on a member: they belong to the group', () => {
    const issues = issuesOf(() => resolveGroupSpec({ name: 'g', tasks: [{ name: 'a', image: 'x', network: 'bridge', ports: [{ container: 80 }], hostname: 'h' }] }));
    assert.deepEqual(issues.map((i) => i.field).sort(), ['tasks[0].hostname', 'tasks[0].network', 'tasks[0].ports']);
    assert.match(issues[0]!.rule, /whole group/);
  });

  it('needs a main task, distinct task names, and valid names', () => {
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', tasks: [{ name: 'a', lifecycle: 'sidecar', image: 'x' }] })), ['tasks']);
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', tasks: [{ name: 'a', image: 'x' }, { name: 'a', image: 'x' }] })), ['tasks[1].name']);
    assert.deepEqual(fields(() => resolveGroupSpec({ name: '-g', tasks: [{ name: 'a b', image: 'x' }] })), ['name', 'tasks[0].name']);
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', tasks: [{ name: 'a', lifecycle: 'later', image: 'x' }] })), ['tasks', 'tasks[0].lifecycle']);
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', tasks: [] })), ['tasks']);
  });

  it('checks the group network: no ports or networks without a network, aliases only on a private one, one kind of network', () => {
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', network: { mode: 'none', ports: [{ container: 80 }] }, tasks: [{ name: 'a', image: 'x' }] })), ['network.ports']);
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', network: { aliases: ['db'] }, tasks: [{ name: 'a', image: 'x' }] })), ['network.aliases']);
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', network: { mode: 'private', networks: [{ name: 'n' }] }, tasks: [{ name: 'a', image: 'x' }] })), ['network.networks']);
    assert.deepEqual(fields(() => resolveGroupSpec({ name: 'g', network: { ports: [{ container: 80 }, { container: 80 }] }, tasks: [{ name: 'a', image: 'x' }] })), ['network.ports[1].container']);
  });

  it('refuses named networks the policy does not list, and re-reads an accepted group without the policy', () => {
    const input = { name: 'g', network: { networks: [{ name: 'backend' }] }, tasks: [{ name: 'a', image: 'x' }] };
    const issues = issuesOf(() => resolveGroupSpec(input, { allowPrivileged: false, allowedNetworks: [] }));
    assert.deepEqual(issues.map((i) => i.field), ['network.networks[0].name']);
    assert.equal(resolveAcceptedGroupSpec(input).network.networks[0]!.name, 'backend');
  });

  it('the group answers on its private network to its tasks\' names and its aliases', () => {
    const group = resolveGroupSpec({ name: 'g', network: { mode: 'private', aliases: ['api'] }, tasks: [{ name: 'Web', image: 'x' }, { name: 'db_1', image: 'x' }] });
    assert.deepEqual(groupAliases(group), ['web', 'api'], 'a task name that is no host name (db_1) is left out');
  });
});

describe('a group task\'s create plan', () => {
  it('joins the infrastructure container\'s namespace, mounts the shared volume and carries the group labels', () => {
    const spec = resolveTaskSpec({ image: 'x', mounts: [{ type: 'tmpfs', target: '/tmp' }] });
    const plan = toCreatePlan(spec, { taskId: 't', ownerId: 'o', startAttempt: 's', group: { groupId: 'g', taskName: 'web', infraContainerId: 'abc', sharedDir: { volumeName: 'berth-g.o.shared', target: '/alloc' } } });
    assert.equal(plan.body.HostConfig.NetworkMode, 'container:abc');
    assert.deepEqual(plan.body.HostConfig.Mounts!.map((m) => [m.Type, m.Source, m.Target]), [['tmpfs', undefined, '/tmp'], ['volume', 'berth-g.o.shared', '/alloc']]);
    assert.equal(plan.body.Labels[LABELS.groupId], 'g');
    assert.equal(plan.body.Labels[LABELS.groupTask], 'web');
    assert.equal(plan.body.NetworkingConfig, undefined);
    assert.deepEqual(plan.connectNetworks, []);
  });

  it('a task outside a group has no group labels', () => {
    const plan = toCreatePlan(resolveTaskSpec({ image: 'x' }), { taskId: 't', ownerId: 'o', startAttempt: 's' });
    assert.equal(plan.body.Labels[LABELS.groupId], undefined);
    assert.equal(plan.body.HostConfig.NetworkMode, 'none');
  });
});
