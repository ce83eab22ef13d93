import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import pg from "pg";

/** The machine's shared servers; tests create their own database and Redis key prefix on them. */
export const PG_ADMIN_URL = process.env.FIELDVAULT_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
export const REDIS_URL = process.env.FIELDVAULT_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

export const dbUrl = (name: string) => {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
};

export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `fv_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  return {
    name,
    url: dbUrl(name),
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export const newRedisPrefix = () => `fvtest:${randomBytes(6).toString("hex")}:`;

/** Every key under a prefix (for leak checks), then deletes them. */
export async function redisKeys(prefix: string, url = REDIS_URL): Promise<string[]> {
  const r = new Redis(url);
  try {
    return await r.keys(`${prefix}*`);
  } finally {
    r.disconnect();
  }
}

export async function dropRedisPrefix(prefix: string, url = REDIS_URL): Promise<void> {
  const r = new Redis(url);
  try {
    const keys = await r.keys(`${prefix}*`);
    if (keys.length) await r.del(...keys);
  } finally {
    r.disconnect();
  }
}
