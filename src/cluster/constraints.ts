import { ValidationError, type FieldIssue } from '../common/errors.js';

/** The prefix of a constraint on a node label: `node.disk` matches the node label `disk`. */
export const NODE_LABEL_PREFIX = 'node.';

/**
 * The node labels a task's constraints ask for: `{ "node.disk": "ssd" }` becomes `{ disk: "ssd" }`,
 * which is what PostgreSQL matches (`node_labels @> constraint_labels`). A key without the `node.`
 * prefix, an empty label name or a value that is not text is a ValidationError naming the field.
 */
export function constraintLabels(constraints: Readonly<Record<string, unknown>> | undefined, field = 'constraints'): Record<string, string> {
  const labels: Record<string, string> = {};
  const issues: FieldIssue[] = [];
  for (const [key, value] of Object.entries(constraints ?? {})) {
    const where = `${field}.${key}`;
    if (!key.startsWith(NODE_LABEL_PREFIX) || key.length === NODE_LABEL_PREFIX.length) {
      issues.push({ field: where, rule: `must name a node label as ${NODE_LABEL_PREFIX}<label>` });
    } else if (typeof value !== 'string') {
      issues.push({ field: where, rule: 'must be text' });
    } else {
      labels[key.slice(NODE_LABEL_PREFIX.length)] = value;
    }
  }
  if (issues.length > 0) throw new ValidationError(issues);
  return labels;
}

/** The constraints as users write them, from the node labels they ask for. */
export function constraintsOf(labels: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).map(([label, value]) => [`${NODE_LABEL_PREFIX}${label}`, value]));
}

/** Whether a node with `nodeLabels` satisfies constraint labels: it has every one with the same value. */
export function labelsSatisfy(nodeLabels: Readonly<Record<string, string>>, wanted: Readonly<Record<string, string>>): boolean {
  return Object.entries(wanted).every(([label, value]) => Object.hasOwn(nodeLabels, label) && nodeLabels[label] === value);
}
