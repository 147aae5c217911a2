import type { SqlConnection } from './sql.js';

/** Well-known keys of the meta table. */
export const META_KEYS = {
  /** The agent's own id, generated at first start and kept for good (it labels its containers). */
  agentId: 'agent-id',
  /** The host and data directory of the agent whose records these are (a PostgreSQL store: one agent per schema). */
  storeOwner: 'store-owner',
} as const;

/** A small key-value table for facts the agent keeps across restarts. */
export class MetaRepository {
  readonly #db: SqlConnection;

  constructor(db: SqlConnection) {
    this.#db = db;
  }

  get(key: string): string | undefined {
    return this.#db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?').get(key)?.value;
  }

  set(key: string, value: string): void {
    this.#db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  /**
   * The value of `key`, created by `create()` and stored if there is none yet. Atomic, so two
   * processes starting at once agree on one value (e.g. the agent id).
   */
  ensure(key: string, create: () => string): string {
    const run = this.#db.transaction((): string => {
      const existing = this.get(key);
      if (existing !== undefined) return existing;
      const value = create();
      this.set(key, value);
      return value;
    });
    return run.immediate();
  }
}
