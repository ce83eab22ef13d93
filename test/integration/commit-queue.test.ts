import { randomBytes } from "node:crypto";
import type { LogDraft } from "../../src/domain/access-log";
import { readySodium } from "../../src/crypto/sodium";
import { signingKeyFromSeed } from "../../src/crypto/signing";
import { CommitQueue } from "../../src/services/commit-queue";
import type { Db, Queryable } from "../../src/storage/db";
import { migrate } from "../../src/storage/migrations";
import { createPgDb } from "../../src/storage/postgres/pg-db";
import { insertTokens } from "../../src/storage/postgres/token-store";
import type { NewToken } from "../../src/storage/ports";
import { createTestDatabase, type TestDatabase } from "../helpers/backends";
import { verifyChains } from "../reliability/helpers/chain";

const draft = (n: number): LogDraft => ({
  at: new Date(),
  caller: "payment-service",
  auth: "self_asserted",
  peer: "ipv4:127.0.0.1:1",
  action: "detokenize",
  category: "card_number",
  token: `tok_${String(n).padStart(22, "0")}`,
  purpose: "refund",
  justification: "",
  outcome: "allowed",
  requestId: `req_${n}`,
  instanceId: "fv-test",
  detail: "",
});

/**
 * The real database, with one failure we cannot provoke on demand: a COMMIT that succeeded but
 * whose acknowledgement was lost. The transaction really commits; the caller is told it failed.
 */
function losingOneAck(db: Db): Db & { loseNextAck(): void } {
  let lose = false;
  const afterCommit = <T>(out: T): T => {
    if (lose) {
      lose = false;
      throw Object.assign(new Error("Connection terminated unexpectedly"), { code: "ECONNRESET" });
    }
    return out;
  };
  return {
    ...db,
    loseNextAck: () => (lose = true),
    async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
      return afterCommit(await db.transaction(fn));
    },
    async query<R>(text: string, params?: unknown[]) {
      return afterCommit(await db.query<R>(text, params));
    },
  };
}

describe("CommitQueue on PostgreSQL", () => {
  let tdb: TestDatabase;
  let db: Db;

  beforeAll(async () => {
    await readySodium();
    tdb = await createTestDatabase();
    db = createPgDb({ url: tdb.url, poolSize: 4 });
    await migrate(db);
  });
  afterAll(async () => {
    await db?.close();
    await tdb?.drop();
  });

  it("keeps logging after a commit whose acknowledgement was lost, on a fresh chain with no gap or reuse", async () => {
    const flaky = losingOneAck(db);
    const q = new CommitQueue(flaky, {
      chainId: `fv-test.${randomBytes(3).toString("hex")}`,
      signingKey: signingKeyFromSeed(new Uint8Array(32).fill(7)),
      checkpointEvery: 1000,
      checkpointIntervalMs: 60_000,
    });
    await q.append([draft(1), draft(2)]);
    flaky.loseNextAck();
    await expect(q.append([draft(3)])).rejects.toMatchObject({ code: "UNAVAILABLE" });
    // Entry 3 did commit: a writer that rolled its chain back would now collide with it forever.
    for (let i = 4; i < 10; i++) await q.append([draft(i)]);
    await q.close();

    const { rows } = await db.query<{ chain_id: string; n: number }>(
      "SELECT chain_id, count(*)::int AS n FROM access_log GROUP BY chain_id ORDER BY min(seq)",
      [],
    );
    expect(rows.map((r) => r.n)).toEqual([3, 6]);
    expect(rows[1]!.chain_id).toBe(`${rows[0]!.chain_id}.r1`);
    expect(await verifyChains(db)).toMatchObject({ ok: true, chains: 2, entries: 9 });
  });

  it("group-commits concurrent appends and keeps one gap-free chain", async () => {
    let flushes = 0;
    const counted = new CommitQueue(db, {
      chainId: `fv-test.${randomBytes(3).toString("hex")}`,
      signingKey: signingKeyFromSeed(new Uint8Array(32).fill(9)),
      checkpointEvery: 50,
      checkpointIntervalMs: 60_000,
      onFlush: ({ ok }) => ok && flushes++,
    });
    await Promise.all(Array.from({ length: 300 }, (_, i) => counted.append([draft(i)])));
    await counted.close();
    expect(flushes).toBeLessThan(300 / 4);
    expect((await verifyChains(db)).ok).toBe(true);
    // Closing seals the chain: the last checkpoint covers its last entry.
    const { rows } = await db.query<{ n: number }>(
      "SELECT max(chain_seq)::int AS n FROM log_checkpoints WHERE chain_id = $1",
      [counted.chainId],
    );
    expect(rows[0]!.n).toBe(300);
  });

  it("splits a burst of large jobs over flushes of at most maxRowsPerFlush rows, whole jobs only, one chain in order", async () => {
    const flushed: { jobs: number; entries: number }[] = [];
    const q = new CommitQueue(db, {
      chainId: `fv-test.${randomBytes(3).toString("hex")}`,
      signingKey: signingKeyFromSeed(new Uint8Array(32).fill(11)),
      checkpointEvery: 100_000,
      checkpointIntervalMs: 60_000,
      maxRowsPerFlush: 1000,
      onFlush: ({ ok, jobs, entries }) => ok && entries > 0 && flushed.push({ jobs, entries }),
    });
    // Eight jobs of 400 entries, queued in one tick, and one job larger than the limit on its own.
    const jobs = [...Array.from({ length: 8 }, (_, j) => Array.from({ length: 400 }, (_, i) => draft(j * 1000 + i))), Array.from({ length: 1500 }, (_, i) => draft(9000 + i))];
    await Promise.all(jobs.map((log) => q.append(log)));
    await q.close();
    // Every flush took whole jobs; none passed the limit unless one job alone did.
    for (const f of flushed) expect(f.entries % 400 === 0 || f.entries === 1500).toBe(true);
    for (const f of flushed) expect(f.entries <= 1000 || f.jobs === 1).toBe(true);
    expect(flushed.reduce((n, f) => n + f.entries, 0)).toBe(8 * 400 + 1500);
    expect(flushed.length).toBeGreaterThanOrEqual(5);
    expect((await verifyChains(db)).ok).toBe(true);
    const { rows } = await db.query<{ request_id: string }>("SELECT request_id FROM access_log WHERE chain_id = $1 ORDER BY chain_seq", [q.chainId]);
    expect(rows.map((r) => r.request_id)).toEqual(jobs.flat().map((d) => d.requestId));
  });

  it("never deadlocks two pipelined flushes that write the same deterministic value", async () => {
    const q = new CommitQueue(db, {
      chainId: `fv-test.${randomBytes(3).toString("hex")}`,
      signingKey: signingKeyFromSeed(new Uint8Array(32).fill(5)),
      checkpointEvery: 1000,
      checkpointIntervalMs: 60_000,
      maxFlushesInFlight: 2,
    });
    const fp = randomBytes(32);
    const row = (id: string): NewToken => ({
      id,
      category: "card_number",
      kekVersion: 1,
      wrappedDek: randomBytes(72),
      ciphertext: randomBytes(57),
      masked: { display: "visa •••• 1111", brand: "visa", last: "1111", expired: false },
      createdAt: new Date(),
      expiresAt: null,
      fingerprint: fp,
      subjectRef: null,
    });
    // The earlier flush writes the value late (inside its work); the later flush carries it as a token row.
    const started = Date.now();
    const first = q.submit({
      work: async (tx) => {
        await new Promise((r) => setTimeout(r, 300));
        return (await insertTokens(tx, [row("tok_first000000000000000")]))[0];
      },
      log: [draft(1)],
    });
    await new Promise((r) => setTimeout(r, 50)); // the first flush is in its work now
    const second = q.submit({ tokens: [row("tok_second00000000000000")], log: [draft(2)] });
    const [a, b] = await Promise.all([first, second]);
    await q.close();
    expect(Date.now() - started).toBeLessThan(5000); // a lock cycle would wait for the 10 s statement timeout
    expect(a.result).toBe("tok_first000000000000000");
    expect(b.tokenIds).toEqual(["tok_first000000000000000"]);
  });
});
