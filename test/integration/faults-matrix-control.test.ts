import { describeLibraryMatrix } from '../support/fault-matrix.js';

// Calls a task makes when its owner acts on it, each under each fault (see test/support/fault-matrix.ts).
await describeLibraryMatrix('the fault matrix: stop, kill, exec and events of a running task', ['stop', 'kill', 'exec', 'events']);
