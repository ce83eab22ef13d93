import { Redis } from "ioredis";
import pg from "pg";
import { REDIS_URL } from "../helpers/backends";
import { codeOf, tokenApi } from "../helpers/client";
import { startTestVault, type TestVault } from "../helpers/vault";
import { decodeCvv, encodeCvv } from "../../src/storage/ports";

/**
 * Attacks on CVV single use by someone who can write to Redis (and a log outage): a consumed CVV
 * restored from a DUMP does not reveal again; an envelope whose expiry was rewritten (TTL removed)
 * does not open; a failed log commit does not lose the CVV; concurrent reveals — on two instances —
 * give the value at most once.
 */
describe("CVV single use does not depend on Redis integrity", () => {
  let a: TestVault;
  let b: TestVault;
  let redis: Redis;
  const pay = (t: TestVault) => tokenApi(t.clients, "payment-service");
  const key = (token: string) => `${a.redisPrefix}cvv:${token}`;
  const reveal = (t: TestVault, token: string) =>
    pay(t).detokenize({ tokens: [token], purpose: "payment_authorization", justification: "T-1" }).then((r) => r.results[0]!.outcome);
  const newCvv = async (value: string) =>
    (await pay(a).tokenize({ fields: [{ category: "card_cvv", value }], ttlSeconds: 0, subjectRef: "" })).tokens[0]!.token;

  beforeAll(async () => {
    a = await startTestVault("postgres");
    b = await startTestVault("postgres", {}, { db: a.db, redisPrefix: a.redisPrefix });
    redis = new Redis(REDIS_URL);
  }, 60_000);
  afterAll(async () => {
    redis?.disconnect();
    await b?.stop();
    await a?.stop();
  }, 60_000);

  it("a consumed CVV restored into Redis (DUMP/RESTORE) does not reveal again", async () => {
    const token = await newCvv("731");
    const dump = await redis.dumpBuffer(key(token));
    expect(dump).not.toBeNull();
    expect(await reveal(a, token)).toEqual({ $case: "value", value: "731" });
    expect(await redis.exists(key(token))).toBe(0);
    await redis.restore(key(token), 600_000, dump!);
    expect(await reveal(a, token)).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });
    expect(await reveal(b, token)).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });
    // The withheld replays are logged as not_found; the one reveal as allowed.
    const { rows } = await a.vault.db.query<{ outcome: string }>(
      "SELECT outcome FROM access_log WHERE token = $1 AND action = 'detokenize' ORDER BY seq",
      [token],
    );
    expect(rows.map((r) => r.outcome)).toEqual(["allowed", "not_found", "not_found"]);
  });

  it("rewriting expiresAt (to 2099) and removing the TTL does not keep a CVV alive", async () => {
    const token = await newCvv("482");
    const rec = decodeCvv((await redis.getBuffer(key(token)))!)!;
    const far = new Date("2099-01-01T00:00:00Z");
    await redis.set(key(token), encodeCvv({ ...rec, expiresAt: far }));
    expect(await redis.ttl(key(token))).toBe(-1);
    const out = await reveal(a, token);
    expect(out).toMatchObject({ $case: "error" });
    expect(JSON.stringify(out)).not.toContain("482");
    // Moving createdAt along with it does not help either.
    await redis.set(key(token), encodeCvv({ ...rec, createdAt: new Date(far.getTime() - 600_000), expiresAt: far }));
    const again = await reveal(a, token);
    expect(again).toMatchObject({ $case: "error" });
    expect(JSON.stringify(again)).not.toContain("482");
  });

  it("a failed log commit reveals nothing and does not consume the CVV", async () => {
    const token = await newCvv("9051");
    const admin = new pg.Client({ connectionString: a.db!.url });
    await admin.connect();
    try {
      await admin.query(`CREATE FUNCTION fail_log() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'log down'; END $$;
                         CREATE TRIGGER fail_log BEFORE INSERT ON access_log FOR EACH ROW EXECUTE FUNCTION fail_log();`);
      const err = await codeOf(pay(a).detokenize({ tokens: [token], purpose: "payment_authorization", justification: "" }));
      expect(err.code).toBe(14); // UNAVAILABLE
      expect(err.details).not.toContain("9051");
    } finally {
      await admin.query("DROP TRIGGER IF EXISTS fail_log ON access_log; DROP FUNCTION IF EXISTS fail_log()");
      await admin.end();
    }
    expect(await redis.exists(key(token))).toBe(1);
    expect(await reveal(a, token)).toEqual({ $case: "value", value: "9051" });
  });

  it("twenty concurrent reveals on two instances give the value exactly once", async () => {
    const token = await newCvv("3317");
    const outs = await Promise.all(Array.from({ length: 20 }, (_, i) => reveal(i % 2 ? a : b, token)));
    expect(outs.filter((o) => o?.$case === "value")).toEqual([{ $case: "value", value: "3317" }]);
    expect(outs.filter((o) => o?.$case === "error")).toHaveLength(19);
  });

  it("two items naming the same CVV in one call reveal it once", async () => {
    const token = await newCvv("118");
    const { results } = await pay(a).detokenize({ tokens: [token, token], purpose: "payment_authorization", justification: "" });
    expect(results.map((r) => r.outcome?.$case)).toEqual(["value", "error"]);
  });
});
