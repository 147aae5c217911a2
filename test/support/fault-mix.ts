/**
 * A mixed fault profile for the fault proxy, as an operator meets it: some calls fail after the
 * engine acted (500s, dropped connections), some are refused before (503s), some are slow, and a
 * few never answer or stall mid-stream (bounded by `times`, so the mix stays a mix). Single faults
 * alone do not find everything; this profile is what the agent mix tests and `npm run bench faults`
 * run under. Seeded, so that a failing mix can be run again with the same draws (the interleaving of
 * concurrent requests still varies).
 */
import type { FaultProxy, FaultRule } from './fault-proxy.js';

export interface MixOptions {
  /** The base chance of a fault per matching call. Default 0.1. */
  rate?: number;
  /** How many calls of each never-answering kind (create, wait, logs) and of each stall (wait, logs) at most. Default 2. */
  neverAnswering?: number;
  /** The delay of a slow call. Default 300 ms. */
  slowMs?: number;
}

/**
 * A seeded generator (mulberry32), so that a probabilistic fault run draws the same faults every
 * time. Its arithmetic is 32-bit integer (Math.imul): an LCG multiplied in doubles loses its low bits
 * past 2^53 and cycles early.
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const CONTAINER = '[^/]+';
const path = (suffix: string): RegExp => new RegExp(`^/containers/${CONTAINER}/${suffix}$`);

/**
 * Adds the mixed profile's rules to `proxy` (after any it has). Rules are tried in order and the
 * first that fires applies: the rare, bounded ones first, the slow calls last.
 */
export function addMixedFaults(proxy: FaultProxy, options: MixOptions = {}): FaultRule[] {
  const p = options.rate ?? 0.1;
  const never = options.neverAnswering ?? 2;
  const slowMs = options.slowMs ?? 300;
  const hour = 3_600_000;
  const rules: FaultRule[] = [];
  const add = (...input: Parameters<FaultProxy['addRule']>): void => void rules.push(proxy.addRule(...input));
  // Calls that never answer, and streams that stall after their head: a few of each.
  add({ method: 'POST', path: '/containers/create', fault: { kind: 'delay', delayMs: hour }, probability: p / 4, times: never });
  add({ method: 'POST', path: path('wait'), fault: { kind: 'delay', delayMs: hour }, probability: p / 4, times: never });
  add({ method: 'GET', path: path('logs'), fault: { kind: 'delay', delayMs: hour }, probability: p / 4, times: never });
  add({ method: 'POST', path: path('wait'), fault: { kind: 'stall' }, probability: p / 4, times: never });
  add({ method: 'GET', path: path('logs'), fault: { kind: 'stall' }, probability: p / 4, times: never });
  // After the engine acted: the work is done, the answer lost.
  add({ method: 'POST', path: '/containers/create', fault: { kind: 'error500AfterForward' }, probability: p });
  add({ method: 'POST', path: '/containers/create', fault: { kind: 'dropAfterForward' }, probability: p / 2 });
  add({ method: 'POST', path: path('start'), fault: { kind: 'error500AfterForward' }, probability: p });
  add({ method: 'POST', path: path('start'), fault: { kind: 'dropAfterForward' }, probability: p / 2 });
  add({ method: 'POST', path: path('attach'), fault: { kind: 'dropAfterForward' }, probability: p / 2 });
  add({ method: 'POST', path: path('wait'), fault: { kind: 'dropAfterForward' }, probability: p });
  add({ method: 'POST', path: path('wait'), fault: { kind: 'error500AfterForward' }, probability: p / 2 });
  add({ method: 'GET', path: path('logs'), fault: { kind: 'dropAfterForward' }, probability: p / 2 });
  add({ method: 'DELETE', path: new RegExp(`^/containers/${CONTAINER}$`), fault: { kind: 'error500AfterForward' }, probability: p });
  add({ method: 'DELETE', path: new RegExp(`^/containers/${CONTAINER}$`), fault: { kind: 'dropAfterForward' }, probability: p / 2 });
  // Refused before the engine saw them.
  add({ method: 'GET', path: path('json'), fault: { kind: 'error503Before' }, probability: p });
  add({ method: 'GET', path: path('logs'), fault: { kind: 'error503Before' }, probability: p / 2 });
  add({ method: 'POST', path: '/containers/create', fault: { kind: 'error503Before' }, probability: p / 2 });
  add({ method: 'POST', path: path('start'), fault: { kind: 'error503Before' }, probability: p / 2 });
  // Slow calls, any kind.
  add({ path: /./, fault: { kind: 'delay', delayMs: slowMs }, probability: p / 2 });
  return rules;
}
