import { createPurge } from "../../src/services/purge";
import { TokenFormat } from "../../src/gen/fieldvault/v1/token_service";
import { tokenApi } from "../helpers/client";
import { withLuhn } from "../helpers/luhn";
import { BACKENDS, startTestVault, type TestVault } from "../helpers/vault";

const nextYear = new Date().getUTCFullYear() + 1;
const DAY = 86400_000;

/** Tokenizes `n` random-category values with a TTL, in calls of at most 1,000 fields. */
async function tokenizeExpiring(t: TestVault, n: number, ttlSeconds: number, tag: string): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i += 1000) {
    const fields = Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({ category: "cardholder_name", value: `Purge ${tag} ${i + k}` }));
    const { tokens } = await tokenApi(t.clients, "payment-service").tokenize({ fields, ttlSeconds, subjectRef: `subj-${tag}` });
    out.push(...tokens.map((x) => x.token));
  }
  return out;
}

const purgeEntries = async (t: TestVault) =>
  (
    await t.vault.db.query<{ caller: string; auth: string; outcome: string; detail: string; token: string; instance_id: string }>(
      "SELECT caller, auth, outcome, detail, token, instance_id FROM access_log WHERE action = 'purge' ORDER BY seq",
      [],
    )
  ).rows;
const erasedIn = (detail: string) => Number(/erased=(\d+)/.exec(detail)![1]);

describe.each(BACKENDS)("purge of expired tokens on %s (controlled clock)", (backend) => {
  let t: TestVault;
  const count = async (sql: string, params: unknown[] = []) => (await t.vault.db.query<{ n: number }>(sql, params)).rows[0]!.n;

  beforeAll(async () => {
    t = await startTestVault(backend);
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("erases expired rows in bounded batches, each batch one access-log entry with counts and no values", async () => {
    const keep = await tokenizeExpiring(t, 3, 0, "keep"); // no expiry
    const later = await tokenizeExpiring(t, 2, 7 * 24 * 3600, "later");
    const gone = await tokenizeExpiring(t, 1200, 60, "gone");
    const before = await count("SELECT count(*)::int AS n FROM tokens");
    const at = new Date(Date.now() + 3600_000); // an hour from now: the 60-second tokens are past, the week-long ones not
    const purge = createPurge({ commits: t.vault.commits, instanceId: "purger-a", batchSize: 500, now: () => at });

    const run = await purge.purgeExpired();
    expect(run).toEqual({ erased: 1200, batches: 3, byCategory: { cardholder_name: 1200 } });
    expect(await count("SELECT count(*)::int AS n FROM tokens")).toBe(before - 1200);
    expect(await count("SELECT count(*)::int AS n FROM tokens WHERE id = ANY($1::text[])", [gone])).toBe(0);
    expect(await count("SELECT count(*)::int AS n FROM token_subjects WHERE subject_ref = 'subj-gone'")).toBe(0);
    expect(await count("SELECT count(*)::int AS n FROM tokens WHERE id = ANY($1::text[])", [[...keep, ...later]])).toBe(5);

    const entries = await purgeEntries(t);
    expect(entries.map((e) => erasedIn(e.detail))).toEqual([500, 500, 200]);
    for (const e of entries) {
      expect(e).toMatchObject({ caller: "fieldvault", auth: "internal", outcome: "erased", token: "", instance_id: "purger-a" });
      expect(e.detail).toMatch(/^erased=\d+ cardholder_name=\d+ expired_before=\S+$/);
      expect(e.detail).not.toMatch(/Purge|tok_/);
    }
    // Purged tokens are unknown now.
    const { results } = await tokenApi(t.clients, "payment-service").detokenize({ tokens: gone.slice(0, 3), purpose: "refund", justification: "" });
    expect(results.map((r) => r.outcome?.$case === "error" && r.outcome.value.code)).toEqual(["NOT_FOUND", "NOT_FOUND", "NOT_FOUND"]);
    // Nothing left to purge: no transaction writes an entry.
    expect(await purge.purgeExpired()).toEqual({ erased: 0, batches: 1, byCategory: {} });
    expect(await purgeEntries(t)).toHaveLength(3);
  });

  it("purges a card (number, its preserving alias, and expiry) only once its month + retention days have passed", async () => {
    const pan = withLuhn("535310987654321");
    const { tokens } = await tokenApi(t.clients, "payment-service").tokenize({
      fields: [
        { category: "card_number", value: pan, tokenFormat: TokenFormat.TOKEN_FORMAT_PRESERVING },
        { category: "card_expiry", value: `11/${nextYear}` },
      ],
      ttlSeconds: 0,
      subjectRef: "card-holder-1",
    });
    const end = Date.UTC(nextYear, 11, 1) + 90 * DAY; // 1 December + 90 days (the default retention)
    expect(tokens.map((x) => x.expiresAt?.getTime())).toEqual([end, end]);
    const alive = () => count("SELECT count(*)::int AS n FROM token_aliases WHERE alias = $1", [tokens[0]!.token]);

    const early = await createPurge({ commits: t.vault.commits, instanceId: "p", batchSize: 500, now: () => new Date(end - 1) }).purgeExpired();
    expect(early.byCategory).toEqual({ cardholder_name: 2 }); // only the first test's week-long tokens
    expect(await alive()).toBe(1);

    const due = await createPurge({ commits: t.vault.commits, instanceId: "p", batchSize: 500, now: () => new Date(end) }).purgeExpired();
    expect(due.byCategory).toEqual({ card_expiry: 1, card_number: 1 });
    expect(await alive()).toBe(0);
    const { results } = await tokenApi(t.clients, "payment-service").detokenize({ tokens: tokens.map((x) => x.token), purpose: "refund", justification: "" });
    expect(results.map((r) => r.outcome?.$case === "error" && r.outcome.value.code)).toEqual(["NOT_FOUND", "NOT_FOUND"]);
  });
});

describe("two purgers at once on one PostgreSQL", () => {
  let a: TestVault;
  let b: TestVault;

  beforeAll(async () => {
    a = await startTestVault("postgres");
    b = await startTestVault("postgres", {}, { db: a.db, redisPrefix: a.redisPrefix });
  });
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
  });

  it("never erase or count a row twice (FOR UPDATE SKIP LOCKED), and together erase every expired row", async () => {
    await tokenizeExpiring(a, 3000, 30, "two");
    const at = new Date(Date.now() + 3600_000);
    const pa = createPurge({ commits: a.vault.commits, instanceId: "purger-a", batchSize: 100, now: () => at });
    const pb = createPurge({ commits: b.vault.commits, instanceId: "purger-b", batchSize: 100, now: () => at });
    const [ra, rb] = await Promise.all([pa.purgeExpired(), pb.purgeExpired()]);
    // A short batch (rows skipped because the other purger held them) ends a run: finish what is left.
    const rest = await pa.purgeExpired();
    expect(ra.erased + rb.erased + rest.erased).toBe(3000);
    expect(Math.min(ra.erased, rb.erased)).toBeGreaterThan(0); // both really worked
    const entries = await purgeEntries(a);
    expect(entries.reduce((s, e) => s + erasedIn(e.detail), 0)).toBe(3000);
    for (const e of entries) expect(erasedIn(e.detail)).toBeLessThanOrEqual(100);
    expect(new Set(entries.map((e) => e.instance_id))).toEqual(new Set(["purger-a", "purger-b"]));
    const { rows } = await a.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens", []);
    expect(rows[0]!.n).toBe(0);
  });
});

describe.each(BACKENDS)("background purge on %s (FIELDVAULT_PURGE_INTERVAL_MS)", (backend) => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault(backend, { FIELDVAULT_PURGE_INTERVAL_MS: "200", FIELDVAULT_PURGE_BATCH_SIZE: "2" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("runs on its interval and logs counts only", async () => {
    const gone = await tokenizeExpiring(t, 5, 1, "bg");
    const deadline = Date.now() + 15_000;
    let left = gone.length;
    while (left > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      left = (await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE id = ANY($1::text[])", [gone])).rows[0]!.n;
    }
    expect(left).toBe(0);
    const entries = await purgeEntries(t);
    expect(entries.reduce((s, e) => s + erasedIn(e.detail), 0)).toBe(5);
    for (const e of entries) expect(erasedIn(e.detail)).toBeLessThanOrEqual(2);
    const lines = t.logs.filter((l) => l.includes("purge: expired tokens erased"));
    expect(lines.length).toBe(entries.length);
    for (const l of lines) expect(l).not.toMatch(/Purge bg|tok_/);
  });
});
