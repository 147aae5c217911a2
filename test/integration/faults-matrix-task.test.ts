import { describeLibraryMatrix } from '../support/fault-matrix.js';

// The calls a task run to its end makes by itself, each under each fault (see test/support/fault-matrix.ts).
await describeLibraryMatrix('the fault matrix: create, start and remove of a task run to its end', ['create', 'start', 'remove']);
