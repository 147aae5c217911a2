/**
 * One real `berth agent` process with one running task, for the cases that measure a call on a
 * running task through the agent against the engine's own (exec, files, files-download): the agent
 * started from bin/berth.js (or BENCH_AGENT_ENTRY), a task submitted and followed until `ready`
 * says it is, and everything removed afterwards, whatever happened.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Dockerode from 'dockerode';
import { AgentClient } from '../src/agent/client.js';
import type { TaskView } from '../src/agent/http/views.js';
import { LABELS } from '../src/common/labels.js';
import { startAgentProcess, type RunningAgent } from '../test/support/agent.js';
import { BENCH_IMAGE, BENCH_LABEL, removeLabelledContainers, type CaseContext } from './support.js';

const READY_DEADLINE_MS = 120_000;
const BERTH_BIN = fileURLToPath(new URL('../bin/berth.js', import.meta.url));
const BUILT_ENTRY = fileURLToPath(new URL('../dist/cli/entry.js', import.meta.url));

export interface AgentTaskBench {
  agent: RunningAgent;
  client: AgentClient;
  taskId: string;
  /** The task's container, for the engine's side of the comparison. */
  container: Dockerode.Container;
  /** What ran the agent, for the figures: `dist`, `tsx` or BENCH_AGENT_ENTRY. */
  agentEntry: string;
}

export interface AgentTaskOptions {
  /** Names the agent, the task and the temporary directory. */
  name: string;
  /** The task's command. */
  command: string[];
  /** More agent configuration lines (YAML). */
  config?: string[];
  /** Whether the running task is ready for the case (e.g. a file it writes exists). Default: running is ready. */
  ready?: (client: AgentClient, task: TaskView) => Promise<boolean>;
  readyWithinMs?: number;
}

/** Runs `work` with an agent and its running task; removes both afterwards. */
export async function withAgentTask(ctx: CaseContext, options: AgentTaskOptions, work: (bench: AgentTaskBench) => Promise<void>): Promise<void> {
  const docker = ctx.docker ?? new Dockerode({ socketPath: '/var/run/docker.sock' });
  const agentId = `bench-${ctx.runId}-${options.name}`;
  const dataDir = await mkdtemp(path.join(os.tmpdir(), `berth-bench-${options.name}-`));
  const configFile = path.join(dataDir, 'agent.yaml');
  await writeFile(configFile, [`agentId: ${agentId}`, 'images: {cleanup: false}', 'reconcile: {enabled: false}', ...(options.config ?? []), ''].join('\n'));
  const entry = process.env.BENCH_AGENT_ENTRY?.trim() || BERTH_BIN;
  let agent: RunningAgent | undefined;
  let client: AgentClient | undefined;
  try {
    agent = await startAgentProcess(dataDir, ['--config', configFile], { command: [entry], readyTimeoutMs: READY_DEADLINE_MS, ...(ctx.signal ? { signal: ctx.signal } : {}) });
    const token = (await readFile(path.join(dataDir, 'token'), 'utf8')).trim();
    client = AgentClient.connect({ host: `unix://${agent.socketPath}`, token });
    const taskId = agentId;
    await client.submit({ id: taskId, spec: { image: BENCH_IMAGE, command: options.command, network: 'none', labels: { [BENCH_LABEL]: ctx.runId }, stopGracePeriod: '1s' } });
    const within = options.readyWithinMs ?? 60_000;
    let containerId: string | undefined;
    for (const deadline = Date.now() + within; Date.now() < deadline && containerId === undefined; ) {
      const task = await client.get(taskId);
      const ready = task.state === 'running' && task.containerId !== undefined && (options.ready === undefined || (await options.ready(client, task)));
      if (ready) containerId = task.containerId;
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    if (containerId === undefined) throw new Error(`task ${taskId} was not ready within ${within / 1000} s`);
    const agentEntry = entry !== BERTH_BIN ? entry : existsSync(BUILT_ENTRY) ? 'dist' : 'tsx';
    await work({ agent, client, taskId, container: docker.getContainer(containerId), agentEntry });
  } finally {
    client?.close();
    if (agent) await agent.stop();
    await removeLabelledContainers(docker, `${LABELS.ownerId}=${agentId}`).catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
  }
}
