import { DependencyError } from "../../domain/errors";
import { type CvvRecord, type CvvStore, decodeCvv, encodeCvv } from "../ports";
import type { RedisClient } from "./connect";

const failClosed = async <T>(op: () => Promise<T>): Promise<T> => {
  try {
    return await op();
  } catch (err) {
    throw new DependencyError("redis", err);
  }
};

/**
 * CVV envelopes in Redis with a TTL; single use is enforced in PostgreSQL (see CvvStore.peek).
 *
 * Key layout (the same on one server, Sentinel and Cluster): one key per CVV, `<prefix>cvv:<token>`.
 * Different tokens live in different hash slots, so nothing here sends one command over several
 * tokens' keys (a cluster refuses that with CROSSSLOT): each key gets its own command, and ioredis's
 * auto-pipelining sends the commands of one call together (one round trip per node). A script that
 * needs a companion key of a CVV names it with `sameSlot(key(token), "…")` from ./connect, which
 * keeps it in the CVV's slot without renaming the CVV key itself.
 */
export function createRedisCvvStore(redis: RedisClient, prefix: string): CvvStore {
  const key = (token: string) => `${prefix}cvv:${token}`;
  return {
    put: (entries) =>
      failClosed(async () => {
        const writes = await Promise.allSettled(
          entries.map(({ token, record }) => redis.set(key(token), encodeCvv(record), "PX", Math.max(1, record.expiresAt.getTime() - Date.now()))),
        );
        if (writes.some((w) => w.status === "rejected")) {
          // All or nothing: remove what did land (best effort; a leftover expires with its TTL and its
          // token was never handed to anyone).
          await Promise.allSettled(entries.map(({ token }) => redis.del(key(token))));
          throw (writes.find((w) => w.status === "rejected") as PromiseRejectedResult).reason;
        }
      }),
    peek: (tokens) =>
      failClosed(async () => {
        const out = new Map<string, CvvRecord>();
        const values = await Promise.all(tokens.map((t) => redis.getBuffer(key(t))));
        values.forEach((v, i) => {
          const r = v && decodeCvv(v);
          if (r) out.set(tokens[i]!, r);
        });
        return out;
      }),
    remove: (tokens) => failClosed(async () => (await Promise.all(tokens.map((t) => redis.del(key(t))))).reduce((a, b) => a + b, 0)),
    close: async () => undefined,
  };
}
