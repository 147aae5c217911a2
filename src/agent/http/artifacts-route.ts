import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { BerthError, ValidationError } from '../../common/errors.js';
import { hasEnded } from '../../tasks/lifecycle.js';
import type { Engine } from '../../engine/engine.js';
import type { TaskRecord } from '../../state/tasks.js';
import type { ArtifactStore } from '../artifacts.js';

export interface ArtifactRouteDeps {
  visibleTask: (idOrPrefix: string) => TaskRecord;
  engine: Pick<Engine, 'getArchive'>;
  artifacts: Pick<ArtifactStore, 'open'>;
  /** Streams a body until it ends, the client goes away, or the server closes. */
  sendStream: (reply: FastifyReply, stream: Readable, end: () => void) => FastifyReply;
}

type Handler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** Validates a `path` query: absolute, as the engine's archive endpoint and the spec's `collect` take it. */
function archivePath(path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  if (!path.startsWith('/')) throw new ValidationError([{ field: 'path', rule: 'must be an absolute path' }]);
  return path;
}

/**
 * GET /v1/tasks/:id/artifacts (the kept artifacts of an ended task, as one tar stream, or one
 * collected `path`'s) and GET /v1/tasks/:id/archive?path= (a tar stream of a path in a running
 * task's container, docker cp's read side).
 */
export function artifactHandlers(deps: ArtifactRouteDeps): { taskArtifacts: Handler; taskArchive: Handler } {
  return {
    async taskArtifacts(request, reply) {
      const task = deps.visibleTask((request.params as { id: string }).id);
      const path = archivePath((request.query as { path?: string }).path);
      if (task.artifacts === undefined && !hasEnded(task.state)) {
        throw new BerthError('BERTH_TASK_STATE', `task ${task.id} is ${task.state}: its artifacts are collected when it ends`, { context: { taskId: task.id, state: task.state } });
      }
      // Opened before the answer starts, so that a missing path is a status, not a cut stream.
      const stream = await deps.artifacts.open(task.id, task.artifacts, path);
      reply.type('application/x-tar').header('cache-control', 'no-store');
      return deps.sendStream(reply, stream, () => stream.destroy());
    },

    async taskArchive(request, reply) {
      const task = deps.visibleTask((request.params as { id: string }).id);
      const path = archivePath((request.query as { path?: string }).path);
      if (path === undefined) throw new ValidationError([{ field: 'path', rule: 'is required' }]);
      if (task.state !== 'running' || task.containerId === undefined) {
        throw new BerthError('BERTH_TASK_STATE', `cannot copy from task ${task.id}: it is ${task.state}, not running (an ended task's files are its artifacts: GET /v1/tasks/${task.id}/artifacts)`, {
          context: { taskId: task.id, state: task.state },
        });
      }
      const abort = new AbortController();
      const stream = await deps.engine.getArchive(task.containerId, path, { signal: abort.signal });
      reply.type('application/x-tar').header('cache-control', 'no-store');
      return deps.sendStream(reply, stream, () => abort.abort());
    },
  };
}
