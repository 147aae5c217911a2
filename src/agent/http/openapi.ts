import { z } from 'zod';
import { taskSpecSchema } from '../../spec/schema.js';
import { agentEventSchema, API_ROUTES, errorBodySchema, logRecordSchema, taskViewSchema, type ApiRoute, type JsonSchema } from './schemas.js';
import { BERTH_VERSION } from '../../common/version.js';

/** The OpenAPI document's own fields that berth fills in; everything else comes from the route table. */
export interface OpenApiInfo {
  /** The agent's version. Default berth's own (package.json). */
  version?: string;
}

const TASK_SPEC_REF = '#/components/schemas/TaskSpec';

/**
 * The task spec's schema as the agent checks it: generated from the zod schema the supervisor
 * validates every submitted spec with, in its input form (sizes and durations may be strings).
 */
function taskSpecJsonSchema(): JsonSchema {
  const { $schema: _dialect, ...schema } = z.toJSONSchema(taskSpecSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  const properties = { ...(schema.properties as Record<string, unknown>) };
  // The library also takes a stream or bytes; over HTTP stdin is text.
  properties.stdin = { type: 'string', description: 'Input piped to the task\'s stdin, which is closed at its end (unless openStdin: then it stays open for attach clients).' };
  return { ...schema, properties };
}

function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

function parameters(route: ApiRoute): unknown[] {
  const out: unknown[] = [];
  const add = (where: 'path' | 'query', schema: JsonSchema | undefined): void => {
    if (!schema) return;
    const required = new Set((schema.required as string[] | undefined) ?? []);
    for (const [name, property] of Object.entries(schema.properties as Record<string, JsonSchema>)) {
      const { description, ...propertySchema } = property;
      out.push({
        name,
        in: where,
        required: where === 'path' || required.has(name),
        schema: propertySchema,
        ...(description === undefined ? {} : { description }),
        ...(propertySchema.type === 'array' ? { style: 'form', explode: true } : {}),
      });
    }
  };
  add('path', route.params);
  add('query', route.querystring);
  return out;
}

function requestBody(route: ApiRoute): unknown {
  if (route.rawBody) return { required: true, description: route.rawBody.description, content: { [route.rawBody.contentType]: { schema: { type: 'string', format: 'binary' } } } };
  if (!route.body) return undefined;
  const properties = { ...(route.body.properties as Record<string, JsonSchema>) };
  // fastify checks that spec is an object; the agent checks the rest against TaskSpec and names the field.
  if (properties.spec) properties.spec = { allOf: [properties.spec, { $ref: TASK_SPEC_REF }] };
  return { required: true, content: { 'application/json': { schema: { ...route.body, properties } } } };
}

function responses(route: ApiRoute): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (route.stream) {
    const { status, contentType, description, itemSchema } = route.stream;
    out[String(status)] = { description, content: { [contentType]: { schema: itemSchema ?? { type: 'string' } } } };
  }
  for (const [status, response] of Object.entries(route.responses)) {
    out[status] = {
      description: response.description,
      ...(response.schema ? { content: { 'application/json': { schema: response.schema } } } : {}),
    };
  }
  // Every error, the router's and the HTTP parser's included, has the one shape.
  out.default = {
    description:
      'Any other error, in the same shape: 404 no such route, 405 a method the path does not take, 408 a request too slow, 413 a body past 1 MiB, 414 a path segment past 512 characters, 415 a body that is not JSON, 431 headers too large (BERTH_VALIDATION, with `issues` naming the part at fault); otherwise the status follows the code: 403 the engine or a registry refused the agent\'s credentials, 500 BERTH_INTERNAL (a bug), 502 the engine or a registry failed, 503 the engine or the agent is unavailable, 504 no progress in time, 507 the data directory is full.',
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  };
  return out;
}

/**
 * The OpenAPI 3.1 document of the agent's API, built from the route table and schemas the server
 * validates and serializes with (`schemas.ts`).
 */
export function buildOpenApiDocument(info: OpenApiInfo = {}): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of API_ROUTES) {
    const operations = (paths[openApiPath(route.url)] ??= {});
    const params = parameters(route);
    const body = requestBody(route);
    operations[route.method.toLowerCase()] = {
      operationId: route.operationId,
      summary: route.summary,
      ...(route.isPublic ? { security: [] } : {}),
      ...(params.length > 0 ? { parameters: params } : {}),
      ...(body === undefined ? {} : { requestBody: body }),
      responses: responses(route),
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'berth agent',
      version: info.version ?? BERTH_VERSION,
      description:
        'Runs tasks as Docker containers. Every request but /healthz needs `Authorization: Bearer <token>`; the token is in `<dataDir>/token`. Every `{id}` of a task route is a task id or any unique prefix of one: the task with exactly that id wins; a prefix several tasks start with is answered 409 BERTH_TASK_AMBIGUOUS, naming some of them and the count.',
    },
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        TaskSpec: taskSpecJsonSchema(),
        TaskView: taskViewSchema,
        LogRecord: logRecordSchema,
        AgentEvent: agentEventSchema,
        Error: errorBodySchema,
      },
    },
  };
}
