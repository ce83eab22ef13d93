import { Redis } from "ioredis";
import { connectRedis, parseRedisUrl } from "../../src/storage/redis/connect";
import { createKeyChangeNotices } from "../../src/storage/redis/key-notices";
import { newRedisPrefix, REDIS_URL } from "../helpers/backends";
import { startTestVault } from "../helpers/vault";
import { freePort, waitFor } from "../reliability/helpers/ports";
import { codeName, tokens } from "../reliability/helpers/rpc";

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

  it("starts within seconds when Redis is not there; CVV calls answer UNAVAILABLE, the rest works", async () => {
    const nobody = await freePort();
    const started = Date.now();
    const v = await startTestVault("postgres", { FIELDVAULT_REDIS_URL: `redis://127.0.0.1:${nobody}` });
    try {
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(v.logs.some((l) => l.includes("is unreachable") && l.includes("CVV calls answer UNAVAILABLE"))).toBe(true);
      const pay = tokens(v.clients, "payment-service");
      expect(codeName((await pay.tokenize([{ category: "card_cvv", value: "123" }])).code)).toBe("UNAVAILABLE");
      expect(codeName((await pay.tokenize([{ category: "cardholder_name", value: "No Redis" }])).code)).toBe("OK");
    } finally {
      await v.stop();
    }
  });
});
