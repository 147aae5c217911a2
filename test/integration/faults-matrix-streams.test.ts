import { describeLibraryMatrix } from '../support/fault-matrix.js';

// The attach, the wait and the OOM flag's inspect of a task run to its end, each under each fault (see test/support/fault-matrix.ts).
await describeLibraryMatrix('the fault matrix: attach, wait and inspect of a task run to its end', ['attach', 'wait', 'inspect']);
