import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Transform, type Readable } from 'node:stream';
import { BerthError, isBerthError, ValidationError } from '../../common/errors.js';
import type { Engine } from '../../engine/engine.js';
import type { TaskRecord } from '../../state/tasks.js';
import type { UploadStore } from '../uploads.js';
import { API_ROUTES, type ApiRoute } from './schemas.js';

/**
 * Files into tasks through the agent: `POST /v1/uploads` (a tar archive kept for a spec's
 * `files: [{ upload }]`) and `PUT /v1/tasks/:id/archive?path=` (a tar archive extracted into a
 * running task, as `docker cp` does). Their bodies are tar archives, handed to the handler as the
 * request's own stream (a content-type parser scoped to these two routes): an upload is streamed to
 * a file, an archive to the engine, and neither is held in the agent's memory.
 */

export interface FilesRouteDeps {
  visibleTask(idOrPrefix: string): TaskRecord;
  engine: Partial<Pick<Engine, 'putArchive'>> | undefined;
  uploads: Pick<UploadStore, 'receive'> | undefined;
}

const TAR = 'application/x-tar';

/**
 * The engine decodes a chunked body chunk by chunk: the request's 16-64 KiB reads, sent as they
 * come, make it several times slower than writes of a MiB. Chunks are gathered up to this many
 * bytes (one bounded buffer per copy) before they go on.
 */
const ENGINE_WRITE_BYTES = 1024 * 1024;

/** Gathers a stream's chunks into writes of about `bytes`: the memory held is bounded by it. */
export function coalesce(source: Readable, bytes = ENGINE_WRITE_BYTES): Readable {
  let held: Buffer[] = [];
  let heldBytes = 0;
  const gather = new Transform({
    highWaterMark: 1,
    transform(chunk: Buffer, _encoding, callback) {
      held.push(chunk);
      heldBytes += chunk.length;
      if (heldBytes < bytes) return callback();
      const out = Buffer.concat(held, heldBytes);
      held = [];
      heldBytes = 0;
      callback(null, out);
    },
    flush(callback) {
      callback(null, heldBytes > 0 ? Buffer.concat(held, heldBytes) : undefined);
    },
  });
  source.once('error', (error) => gather.destroy(error));
  return source.pipe(gather);
}

function route(operationId: string): ApiRoute {
  const found = API_ROUTES.find((r) => r.operationId === operationId);
  if (!found) throw new BerthError('BERTH_INTERNAL', `no route ${operationId} in API_ROUTES`);
  return found;
}

function responseSchemas(r: ApiRoute): Record<number, unknown> {
  const out: Record<number, unknown> = {};
  for (const [status, { schema }] of Object.entries(r.responses)) if (schema) out[Number(status)] = schema;
  return out;
}

export function registerFilesRoutes(app: FastifyInstance, deps: FilesRouteDeps): void {
  void app.register(async (scope) => {
    // The body is the request itself: read by the handler, as it arrives (no bodyLimit: the handlers bound it).
    scope.addContentTypeParser(TAR, (_request, payload, done) => done(null, payload));
    scope.addContentTypeParser('application/octet-stream', (_request, payload, done) => done(null, payload));

    const upload = route('createUpload');
    scope.route({
      method: 'POST',
      url: upload.url,
      schema: { response: responseSchemas(upload) },
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        if (!deps.uploads) throw new BerthError('BERTH_AGENT_UNAVAILABLE', 'this agent keeps no uploads');
        const receipt = await deps.uploads.receive(request.body as Readable);
        return reply.code(201).send(receipt);
      },
    });

    const archive = route('copyIntoTask');
    scope.route({
      method: 'PUT',
      url: archive.url,
      schema: { params: archive.params, querystring: archive.querystring, response: responseSchemas(archive) },
      handler: async (request: FastifyRequest, reply: FastifyReply) => {
        const task = deps.visibleTask((request.params as { id: string }).id);
        const { path } = request.query as { path?: string };
        if (path === undefined || !path.startsWith('/')) throw new ValidationError([{ field: 'path', rule: 'must be an absolute path to a directory in the task\'s container' }]);
        if (task.state !== 'running' || task.containerId === undefined) {
          throw new BerthError('BERTH_TASK_STATE', `cannot copy into task ${task.id}: it is ${task.state}, not running`, { context: { taskId: task.id, state: task.state } });
        }
        const putArchive = deps.engine?.putArchive?.bind(deps.engine);
        if (!putArchive) throw new BerthError('BERTH_ENGINE_UNAVAILABLE', 'this agent serves no engine for copies');
        const aborted = new AbortController();
        const onClose = (): void => {
          if (!request.raw.complete) aborted.abort(new Error('the client went away'));
        };
        request.raw.once('close', onClose);
        try {
          await putArchive(task.containerId, path, coalesce(request.body as Readable), { signal: aborted.signal });
        } catch (error) {
          if (isBerthError(error, 'BERTH_ENGINE_CONFLICT')) {
            throw new BerthError('BERTH_TASK_STATE', `cannot copy into task ${task.id}: its container is not running`, { cause: error, context: { taskId: task.id } });
          }
          throw error;
        } finally {
          request.raw.off('close', onClose);
        }
        return reply.code(204).send();
      },
    });
  });
}
