import { type CvvRecord, type CvvStore, decodeCvv, encodeCvv } from "../ports";

/** In-process stand-in for Redis's CVV role (development only): same encoding, same TTL and single-use rules. */
export function createMemoryCvvStore(now: () => number = Date.now): CvvStore {
  const items = new Map<string, Buffer>();
  const live = (token: string): Buffer | undefined => {
    const b = items.get(token);
    const r = b && decodeCvv(b);
    if (!r) return undefined;
    if (r.expiresAt.getTime() <= now()) {
      items.delete(token);
      return undefined;
    }
    return b;
  };
  const sweep = setInterval(() => {
    for (const t of items.keys()) live(t);
  }, 10_000);
  sweep.unref();
  return {
    async put(entries) {
      for (const { token, record } of entries) items.set(token, encodeCvv(record));
    },
    async peek(tokens) {
      const out = new Map<string, CvvRecord>();
      for (const t of tokens) {
        const b = live(t);
        if (b) out.set(t, decodeCvv(b)!);
      }
      return out;
    },
    async remove(tokens) {
      let n = 0;
      for (const t of tokens) if (items.delete(t)) n++;
      return n;
    },
    async close() {
      clearInterval(sweep);
      items.clear();
    },
  };
}
