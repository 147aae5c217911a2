import { describeCliMatrix } from '../support/fault-matrix.js';

// The calls `berth run` makes to start a task, each under each fault, through the CLI process (see test/support/fault-matrix.ts).
await describeCliMatrix('the fault matrix through berth run: create, start and attach', ['create', 'start', 'attach']);
