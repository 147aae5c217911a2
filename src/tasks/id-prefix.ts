import { BerthError } from '../common/errors.js';

/**
 * Task ids by prefix, as docker takes container ids: the exact id wins, else the one id that
 * starts with what was typed; a prefix that several ids start with is refused with the candidates.
 * One rule for the agent's API (resolved in the store) and for exec and stats (resolved among the
 * engine's containers).
 */

/** How many candidates an ambiguous id prefix names in its error (the count covers them all). */
export const AMBIGUOUS_CANDIDATES_SHOWN = 5;

/**
 * BERTH_TASK_AMBIGUOUS for an id prefix that several tasks start with: the message names a few
 * of them (`candidates`, in id order) and how many there are, so that the user can type enough of
 * the one meant. Context: prefix, count, candidates.
 */
export function ambiguousPrefixError(prefix: string, candidates: readonly string[], count: number): BerthError {
  const more = count > candidates.length ? `, and ${count - candidates.length} more` : '';
  return new BerthError('BERTH_TASK_AMBIGUOUS', `task id prefix ${prefix} is ambiguous: ${count} tasks start with it (${candidates.join(', ')}${more}); type more of the id`, {
    context: { prefix, count, candidates: [...candidates] },
  });
}

/**
 * The task id that `idOrPrefix` names among `taskIds`: itself when it is one of them, else the one
 * id that starts with it, else (none starts with it) `idOrPrefix` unchanged, for the caller to
 * report as not found. Several is BERTH_TASK_AMBIGUOUS.
 */
export function taskIdOfPrefix(idOrPrefix: string, taskIds: readonly string[]): string {
  const matching = [...new Set(taskIds.filter((id) => id.startsWith(idOrPrefix)))].sort();
  if (matching.includes(idOrPrefix)) return idOrPrefix;
  if (matching.length > 1) throw ambiguousPrefixError(idOrPrefix, matching.slice(0, AMBIGUOUS_CANDIDATES_SHOWN), matching.length);
  return matching[0] ?? idOrPrefix;
}
