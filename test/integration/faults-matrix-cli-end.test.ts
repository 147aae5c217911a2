import { describeCliMatrix } from '../support/fault-matrix.js';

// The calls `berth run` makes once its task runs, each under each fault, through the CLI process (see test/support/fault-matrix.ts).
await describeCliMatrix('the fault matrix through berth run: wait, inspect and remove', ['wait', 'inspect', 'remove']);
