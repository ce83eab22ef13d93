import { Redis } from "ioredis";
import { connectRedis, parseRedisUrl } from "../../src/storage/redis/connect";
import { createKeyChangeNotices } from "../../src/storage/redis/key-notices";
import { newRedisPrefix, REDIS_URL } from "../helpers/backends";
import { waitFor } from "../reliability/helpers/ports";

/** The third topology: one plain Redis server (the machine's), through the same connect and notice code. */
describe("plain redis:// through connectRedis", () => {
  it("opens ioredis's single-server client and passes key-change notices between two instances' clients", async () => {
    const prefix = newRedisPrefix();
    const url = `${REDIS_URL}${REDIS_URL.includes("?") ? "&" : "?"}prefix=${encodeURIComponent(prefix)}`;
    const target = parseRedisUrl(url);
    expect(target).toMatchObject({ kind: "single", prefix });
    const [a, b] = [connectRedis(target), connectRedis(target)];
    a.on("error", () => undefined);
    b.on("error", () => undefined);
    try {
      expect(a).toBeInstanceOf(Redis);
      let seen = 0;
      const unsubscribe = await createKeyChangeNotices(b, prefix).subscribe(() => seen++);
      await waitFor("a notice from the other client", async () => {
        await createKeyChangeNotices(a, prefix).publish();
        return seen > 0;
      }, 5000, 100);
      // Another prefix's notices are not ours.
      await new Promise((r) => setTimeout(r, 200)); // (let the retries' own notices land first)
      const before = seen;
      await createKeyChangeNotices(a, newRedisPrefix()).publish();
      await new Promise((r) => setTimeout(r, 200));
      expect(seen).toBe(before);
      await unsubscribe();
    } finally {
      a.disconnect();
      b.disconnect();
    }
  });
});
