import type { Redis } from "ioredis";
import { DependencyError } from "../../domain/errors";
import { type CvvRecord, type CvvStore, decodeCvv, encodeCvv } from "../ports";

const failClosed = async <T>(op: () => Promise<T>): Promise<T> => {
  try {
    return await op();
  } catch (err) {
    throw new DependencyError("redis", err);
  }
};

/** CVV envelopes in Redis with a TTL; single use is enforced in PostgreSQL (see CvvStore.peek). */
export function createRedisCvvStore(redis: Redis, prefix: string): CvvStore {
  const key = (token: string) => `${prefix}cvv:${token}`;
  return {
    put: (entries) =>
      failClosed(async () => {
        const multi = redis.multi();
        for (const { token, record } of entries) {
          const ttl = Math.max(1, record.expiresAt.getTime() - Date.now());
          multi.set(key(token), encodeCvv(record), "PX", ttl);
        }
        const results = await multi.exec();
        if (!results || results.some(([err]) => err)) throw new Error("redis transaction failed");
      }),
    peek: (tokens) =>
      failClosed(async () => {
        const out = new Map<string, CvvRecord>();
        if (tokens.length === 0) return out;
        const values = await redis.mgetBuffer(...tokens.map(key));
        values.forEach((v, i) => {
          const r = v && decodeCvv(v);
          if (r) out.set(tokens[i]!, r);
        });
        return out;
      }),
    remove: (tokens) => failClosed(async () => (tokens.length ? redis.del(...tokens.map(key)) : 0)),
    close: async () => undefined,
  };
}
