import { describeAgentLogsMatrix, describeLibraryMatrix } from '../support/fault-matrix.js';

// The pull of a registry image by the library, and the engine log read by the agent, each under each fault (see test/support/fault-matrix.ts).
await describeLibraryMatrix('the fault matrix: the pull of a task image', ['pull']);
await describeAgentLogsMatrix('the fault matrix: the engine log the agent reads a task output from');
