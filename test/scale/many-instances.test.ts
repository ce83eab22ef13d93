import { createTestDatabase, type TestDatabase } from "../helpers/backends";
import { keyApi } from "../helpers/key-admin";
import { type ChildVault, startChildVault } from "../reliability/helpers/child-vault";
import { codeName, tokens, unaryCall, valuesOf } from "../reliability/helpers/rpc";
import { TokenServiceService } from "../../src/gen/fieldvault/v1/token_service";
import { SAMPLES } from "../helpers/samples";
import pg from "pg";
import { verifyLog } from "./helpers/log-calls";
import { type OwnCluster, startOwnCluster } from "./helpers/redis-servers";
import { connectRedis, parseRedisUrl } from "../../src/storage/redis/connect";
import { createKeyChangeNotices } from "../../src/storage/redis/key-notices";

/**
 * Three vault processes (the real entry point) on one PostgreSQL database and one three-master Redis
 * Cluster, with a client that spreads its calls round-robin: they behave as one vault.
 */
describe("three vault processes on one PostgreSQL and one Redis Cluster", () => {
  let cluster: OwnCluster;
  let db: TestDatabase;
  let vaults: ChildVault[] = [];
  let next = 0;
  const rr = () => vaults[next++ % vaults.length]!;
  const sql = async <R = Record<string, unknown>>(text: string, params?: unknown[]) => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      return (await c.query(text, params)).rows as R[];
    } finally {
      await c.end();
    }
  };

  beforeAll(async () => {
    [cluster, db] = await Promise.all([startOwnCluster(3), createTestDatabase()]);
    const env = (id: string) => ({
      FIELDVAULT_DATABASE_URL: db.url,
      FIELDVAULT_REDIS_URL: cluster.url("fvmany:"),
      FIELDVAULT_INSTANCE_ID: id,
      // Rotations must arrive by notice (PostgreSQL NOTIFY, Redis pub/sub), not by the refresh timer.
      FIELDVAULT_KEY_CACHE_TTL_MS: "60000",
      FIELDVAULT_DB_POOL_SIZE: "4",
    });
    // The first one migrates and creates the keys; the other two then start together.
    vaults = [await startChildVault(env("vault-a"))];
    vaults.push(...(await Promise.all([startChildVault(env("vault-b")), startChildVault(env("vault-c"))])));
  }, 150_000);
  afterAll(async () => {
    await Promise.all(vaults.map((v) => v.stop()));
    await db?.drop();
    await cluster?.destroy();
  }, 60_000);

  it("reveals on every instance what any instance tokenized (round-robin client)", async () => {
    for (const s of SAMPLES.filter((x) => x.category !== "card_cvv")) {
      const made = await tokens(rr().clients, s.caller).tokenize([{ category: s.category, value: s.value }]);
      expect(codeName(made.code)).toBe("OK");
      const token = made.value!.tokens[0]!.token;
      for (let i = 0; i < 3; i++) {
        const read = await tokens(rr().clients, s.caller).detokenize([token], s.purpose);
        expect({ category: s.category, value: valuesOf(read.value)[0] }).toEqual({ category: s.category, value: s.normal });
      }
    }
  });

  it("reveals each CVV exactly once when all three race for it", async () => {
    const made = await tokens(rr().clients, "payment-service").tokenize(Array.from({ length: 30 }, (_, i) => ({ category: "card_cvv", value: String(700 + i) })));
    const cvvs = made.value!.tokens.map((t) => t.token);
    const outs = await Promise.all(cvvs.map((t) => Promise.all(vaults.map((v) => tokens(v.clients, "payment-service").detokenize([t], "payment_authorization")))));
    outs.forEach((three, i) => {
      const values = three.map((o) => valuesOf(o.value)[0]).filter((x) => x !== undefined);
      expect({ i, values }).toEqual({ i, values: [String(700 + i)] });
    });
  });

  it("uses a key rotated on one instance on all three within 2 s", async () => {
    // Listening on the cluster as a fourth instance would: the rotating instance announces it there too.
    const listener = connectRedis(parseRedisUrl(cluster.url("fvmany:")));
    listener.on("error", () => undefined);
    let notices = 0;
    const unsubscribe = await createKeyChangeNotices(listener, "fvmany:").subscribe(() => notices++);
    await new Promise((r) => setTimeout(r, 300)); // (the SUBSCRIBE reaches a node)
    const admin = keyApi(vaults[0]!.clients, "sec-admin-1");
    const rotated = await admin.rotate("email");
    const at = Date.now();
    const seenAfter = await Promise.all(
      vaults.map(async (v) => {
        for (;;) {
          const made = await tokens(v.clients, "booking-service").tokenize([{ category: "email", value: "rotate@example.com" }]);
          const seen = await unaryCall(v.clients.tokens, TokenServiceService.inspectTokens, "booking-service", { tokens: [made.value!.tokens[0]!.token] });
          if (seen.value!.tokens[0]!.keyVersion === rotated.activeVersion) return Date.now() - at;
          if (Date.now() - at > 5000) return Infinity;
          await new Promise((r) => setTimeout(r, 25));
        }
      }),
    );
    console.log(`rotation seen by the three instances after ${seenAfter.join(", ")} ms`);
    expect(seenAfter.every((ms) => ms <= 2000)).toBe(true);
    expect(notices).toBeGreaterThanOrEqual(1);
    await unsubscribe();
    listener.disconnect();
  });

  it("shares a rewrap between the three: every DEK moves once, each instance does part of it", async () => {
    const category = "address";
    for (let i = 0; i < 3; i++) {
      const out = await tokens(rr().clients, "booking-service", 30_000).tokenize(Array.from({ length: 500 }, (_, j) => ({ category, value: `${i}-${j} Shared Rewrap Road` })));
      expect(codeName(out.code)).toBe("OK");
    }
    const { activeVersion } = await keyApi(rr().clients, "sec-admin-1").rotate(category);
    const [{ n: old }] = (await sql<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE category = $1 AND kek_version <> $2", [category, activeVersion])) as [{ n: number }];
    expect(old).toBeGreaterThanOrEqual(1500);
    const runs = await Promise.all(vaults.map((v, i) => keyApi(v.clients, i % 2 ? "sec-admin-2" : "sec-admin-1").rewrap({ category, batchSize: 20 })));
    const done = runs.map((r) => Number(r.messages[r.messages.length - 1]?.done ?? 0));
    console.log(`rewrap of ${old} DEKs: ${done.join(" + ")}`);
    expect(done.reduce((a, b) => a + b, 0)).toBe(old);
    expect(done.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
    const left = await sql<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE category = $1 AND kek_version <> $2", [category, activeVersion]);
    expect(left[0]!.n).toBe(0);
  }, 60_000);

  it("verifies every instance's chain from any instance, and finds a change in another instance's chain", async () => {
    const chains = await sql<{ instance_id: string; n: number }>("SELECT instance_id, count(DISTINCT chain_id)::int AS n FROM access_log GROUP BY instance_id ORDER BY instance_id");
    expect(chains.map((c) => c.instance_id)).toEqual(["vault-a", "vault-b", "vault-c"]);
    const total = (await sql<{ n: number }>("SELECT count(*)::int AS n FROM access_log"))[0]!.n;
    const good = await verifyLog(vaults[0]!.clients);
    expect(good.ok).toBe(true);
    expect(good.entriesChecked).toBeGreaterThanOrEqual(total);

    // An entry of vault-c's chain edited in the database: vault-a's Verify names it.
    const [victim] = await sql<{ seq: number }>("SELECT seq FROM access_log WHERE instance_id = 'vault-c' AND action = 'detokenize' ORDER BY seq LIMIT 1");
    await sql("ALTER TABLE access_log DISABLE TRIGGER USER");
    await sql("UPDATE access_log SET purpose = 'marketing' WHERE seq = $1", [victim!.seq]);
    await sql("ALTER TABLE access_log ENABLE TRIGGER USER");
    const bad = await verifyLog(vaults[0]!.clients);
    expect(bad).toMatchObject({ ok: false, firstBrokenSequence: Number(victim!.seq), problem: "modified" });
  });
});
