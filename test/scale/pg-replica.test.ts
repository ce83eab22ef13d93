import { startTestVault, type TestVault } from "../helpers/vault";
import { waitFor } from "../reliability/helpers/ports";
import { codeName, tokens } from "../reliability/helpers/rpc";
import { queryLog, verifyLog } from "./helpers/log-calls";
import { type PgPrimaryAndReplica, startPrimaryAndReplica } from "./helpers/pg-replica";

const LAG_TRAILER = "x-fieldvault-replica-lag-seconds";

/** Log reads from a real streaming replica (pg_basebackup -R of the test's own primary); every write on the primary. */
describe("PostgreSQL read replica (FIELDVAULT_DATABASE_READ_URL)", () => {
  let pgs: PgPrimaryAndReplica;
  let v: TestVault;

  beforeAll(async () => {
    pgs = await startPrimaryAndReplica();
    v = await startTestVault(
      "postgres",
      { FIELDVAULT_DATABASE_READ_URL: pgs.replica.url, FIELDVAULT_METRICS_LISTEN: "127.0.0.1:0", FIELDVAULT_CHECKPOINT_INTERVAL_MS: "500" },
      { db: { url: pgs.primary.url, name: "postgres", drop: async () => undefined } },
    );
  }, 120_000);
  afterAll(async () => {
    await v?.stop();
    await pgs?.destroy();
  }, 60_000);

  const metric = async (name: string): Promise<number | undefined> => {
    const body = await (await fetch(`http://${v.vault.metricsAddress}/metrics`)).text();
    const line = body.split("\n").find((l) => l.startsWith(`${name} `));
    return line ? Number(line.split(" ")[1]) : undefined;
  };

  const reveal = async (value: string) => {
    const pay = tokens(v.clients, "payment-service");
    const tok = await pay.tokenize([{ category: "cardholder_name", value }]);
    const token = tok.value!.tokens[0]!.token;
    const out = await pay.detokenize([token], "payment_authorization");
    expect(codeName(out.code)).toBe("OK");
    return token;
  };

  it("answers Query and Verify from the replica and says so, with its lag", async () => {
    const token = await reveal("Replica Reader");
    const { entries, trailers } = await waitFor("the entry to reach the replica", async () => {
      const r = await queryLog(v.clients, { token });
      return r.entries.length ? r : undefined;
    });
    // The tokenize entry names the token it handed out (issue 10.7), the detokenize entry its reveal.
    expect(entries.map((e) => e.action).sort()).toEqual(["detokenize", "tokenize"]);
    expect(Number(trailers.get(LAG_TRAILER)[0])).toBeGreaterThanOrEqual(0);
    const verified = await verifyLog(v.clients);
    expect(verified).toMatchObject({ ok: true, servedByReplica: true });
    expect(verified.entriesChecked).toBeGreaterThan(0);
    // The replica is a replica: it refuses writes, so none of the entries above were written there.
    await expect(pgs.replica.sql("INSERT INTO access_log (seq) VALUES (-1)")).rejects.toThrow(/read-only transaction/);
  });

  it("serves a lagging replica's older view and reports the lag; the entry appears once it replays", async () => {
    await pgs.replica.sql("SELECT pg_wal_replay_pause()");
    try {
      const token = await reveal("Written While Paused");
      await new Promise((r) => setTimeout(r, 1500));
      // Committed on the primary (the reveal happened), not yet on the replica.
      expect((await pgs.primary.sql("SELECT 1 FROM access_log WHERE token = $1 AND action = 'detokenize'", [token])).length).toBe(1);
      const stale = await queryLog(v.clients, { token });
      expect(stale.entries).toEqual([]);
      expect(Number(stale.trailers.get(LAG_TRAILER)[0])).toBeGreaterThan(1);
      const verified = await verifyLog(v.clients);
      expect(verified).toMatchObject({ ok: true, servedByReplica: true });
      expect(verified.replicaLagSeconds).toBeGreaterThan(1);
      expect(await metric("fieldvault_db_replica_lag_seconds")).toBeGreaterThan(1);
      expect(await metric("fieldvault_db_replica_up")).toBe(1);

      await pgs.replica.sql("SELECT pg_wal_replay_resume()");
      const fresh = await waitFor("the entry after replay", async () => {
        const r = await queryLog(v.clients, { token });
        return r.entries.length ? r : undefined;
      });
      expect(fresh.entries[0]!.token).toBe(token);
      await waitFor("the lag to fall back", async () => Number((await queryLog(v.clients, { token })).trailers.get(LAG_TRAILER)[0]) < 1);
    } finally {
      await pgs.replica.sql("SELECT pg_wal_replay_resume()").catch(() => undefined);
    }
  });

  it("falls back to the primary (WARN and a metric) while the replica is down, and returns to it", async () => {
    pgs.replica.stop("immediate");
    const token = await reveal("Replica Down");
    const { entries, trailers } = await queryLog(v.clients, { token });
    expect(entries.filter((e) => e.action === "detokenize").map((e) => e.token)).toEqual([token]); // the primary answered: it has the newest entry
    expect(trailers.get(LAG_TRAILER)).toEqual([]);
    expect(await verifyLog(v.clients)).toMatchObject({ ok: true, servedByReplica: false, replicaLagSeconds: 0 });
    expect(v.logs.some((l) => l.includes('"level":"warn"') && l.includes("read replica unreachable"))).toBe(true);
    expect(await metric("fieldvault_db_replica_fallbacks_total")).toBeGreaterThanOrEqual(1);
    expect(await metric("fieldvault_db_replica_lag_seconds")).toBeNaN();
    expect(await metric("fieldvault_db_replica_up")).toBe(0);

    await pgs.replica.start();
    await waitFor("reads to return to the replica", async () => (await verifyLog(v.clients)).servedByReplica, 20_000, 500);
  }, 60_000);
});
