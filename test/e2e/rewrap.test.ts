import { status } from "@grpc/grpc-js";
import { tokenApi } from "../helpers/client";
import { bulkPolicyFile, eventually, keyApi, type RewrapRun } from "../helpers/key-admin";
import { startTestVault, type TestVault } from "../helpers/vault";

/**
 * Rewrap at scale on real PostgreSQL: 10,000 tokens, re-wrapped through four key versions — once
 * cancelled halfway, once with the vault stopped halfway, once by two instances at the same time
 * beside live traffic — and every value still opens with its ciphertext untouched.
 */
const CATEGORY = "cardholder_name";
const TOTAL = 10_000;
const CALL = 1_000;

describe("Rewrap of 10,000 tokens on PostgreSQL", () => {
  jest.setTimeout(120_000);
  let a: TestVault;
  const policyFile = bulkPolicyFile();
  const values: string[] = [];
  const tokens: string[] = [];
  let ciphertextBefore: Map<string, string>;
  const admin = (t: TestVault, who = "sec-admin-1") => keyApi(t.clients, who);
  const pay = (t: TestVault) => tokenApi(t.clients, "payment-service");
  const sql = async <R = Record<string, unknown>>(text: string, params: unknown[] = []) => (await a.vault.db.query<R>(text, params)).rows;
  const countUnder = async (version: number) =>
    (await sql<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE category = $1 AND kek_version = $2", [CATEGORY, version]))[0]!.n;
  const ciphertexts = async () =>
    new Map((await sql<{ id: string; c: string }>("SELECT id, encode(ciphertext, 'hex') AS c FROM tokens WHERE category = $1", [CATEGORY])).map((r) => [r.id, r.c]));
  const batchSum = async (toVersion: number) =>
    (await sql<{ detail: string }>("SELECT detail FROM access_log WHERE action = 'key_rewrap_batch' AND category = $1 AND detail LIKE $2", [CATEGORY, `% to=v${toVersion} %`]))
      .map((r) => Number(/rewrapped=(\d+)/.exec(r.detail)![1]))
      .reduce((x, y) => x + y, 0);

  beforeAll(async () => {
    a = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: policyFile });
    for (let i = 0; i < TOTAL; i += CALL) {
      const chunk = Array.from({ length: CALL }, (_, j) => `Bulk Traveller ${String(i + j).padStart(5, "0")}`);
      const res = await pay(a).tokenize({ fields: chunk.map((value) => ({ category: CATEGORY, value })), ttlSeconds: 0, subjectRef: "" });
      values.push(...chunk);
      tokens.push(...res.tokens.map((x) => x.token));
    }
    ciphertextBefore = await ciphertexts();
  });
  afterAll(async () => {
    await a?.stop();
  });

  it("starts with 10,000 tokens under v1", async () => {
    expect(tokens).toHaveLength(TOTAL);
    expect(ciphertextBefore.size).toBe(TOTAL);
    expect(await countUnder(1)).toBe(TOTAL);
  });

  it("a rewrap cancelled halfway leaves the rest under v1; the next run finishes exactly the rest", async () => {
    expect((await admin(a).rotate(CATEGORY)).activeVersion).toBe(2);
    const first = await admin(a).rewrap({ category: CATEGORY, batchSize: 20 }, (_p, n) => n >= 3);
    expect(first.code).toBe(status.CANCELLED);
    // The server stops at its next batch boundary and records the run as interrupted.
    expect(
      await eventually(async () => (await sql("SELECT 1 FROM access_log WHERE action = 'key_rewrap' AND category = $1 AND outcome = 'interrupted'", [CATEGORY])).length === 1, 30_000),
    ).toBe(true);
    const left = await countUnder(1);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(TOTAL);
    expect(await countUnder(2)).toBe(TOTAL - left);
    expect(await batchSum(2)).toBe(TOTAL - left);

    const second = await admin(a, "sec-admin-2").rewrap({ category: CATEGORY, batchSize: 1000 });
    expect(second.code).toBe(status.OK);
    expect(second.messages[second.messages.length - 1]).toEqual({ done: left, remaining: 0 });
    expect(await countUnder(1)).toBe(0);
    expect(await countUnder(2)).toBe(TOTAL);
    expect(await batchSum(2)).toBe(TOTAL);
  });

  it("a vault stopped in the middle of a rewrap leaves the rest for another instance to finish", async () => {
    expect((await admin(a).rotate(CATEGORY)).activeVersion).toBe(3);
    const b = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: policyFile }, { db: a.db, redisPrefix: a.redisPrefix });
    let stopping: Promise<void> | undefined;
    let run: RewrapRun | undefined;
    try {
      run = await admin(b).rewrap({ category: CATEGORY, batchSize: 20 }, (_p, n) => {
        if (n === 3) stopping = b.stop();
      });
    } catch (err) {
      // The server may end the stream with UNAVAILABLE while it shuts down; either way it stopped.
      expect([status.UNAVAILABLE, status.CANCELLED]).toContain((err as { code: number }).code);
    } finally {
      await (stopping ?? b.stop());
    }
    if (run) expect(run.messages[run.messages.length - 1]!.remaining).toBeGreaterThan(0);
    const left = await countUnder(2);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(TOTAL);

    const finish = await admin(a).rewrap({ category: CATEGORY, batchSize: 500 });
    expect(finish.messages[finish.messages.length - 1]).toEqual({ done: left, remaining: 0 });
    expect(await countUnder(2)).toBe(0);
    expect(await countUnder(3)).toBe(TOTAL);
  });

  it("two instances rewrapping at once share the work (each DEK once, no deadlock) while tokenize and detokenize keep working", async () => {
    expect((await admin(a).rotate(CATEGORY)).activeVersion).toBe(4);
    const c = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: policyFile }, { db: a.db, redisPrefix: a.redisPrefix });
    try {
      // The second instance has picked up v4 (NOTIFY), so its own tokenize traffic is under v4 too.
      expect(await eventually(() => c.vault.keyring.active(CATEGORY).version === 4, 5_000)).toBe(true);

      let rewrapping = true;
      const traffic = async (t: TestVault, offset: number) => {
        let calls = 0;
        const problems: string[] = [];
        while (rewrapping || calls < 3) {
          const fresh = Array.from({ length: 20 }, (_, i) => `Live Traffic ${offset}-${calls}-${i}`);
          const made = await pay(t).tokenize({ fields: fresh.map((value) => ({ category: CATEGORY, value })), ttlSeconds: 0, subjectRef: "" });
          const sample = Array.from({ length: 50 }, (_, i) => (offset + calls * 397 + i * 191) % TOTAL);
          const old = await pay(t).detokenize({ tokens: sample.map((i) => tokens[i]!), purpose: "refund", justification: "LIVE" });
          old.results.forEach((r, i) => {
            if (r.outcome?.$case !== "value" || r.outcome.value !== values[sample[i]!]) problems.push(`old ${sample[i]}: ${JSON.stringify(r.outcome)}`);
          });
          const back = await pay(t).detokenize({ tokens: made.tokens.map((x) => x.token), purpose: "refund", justification: "LIVE" });
          back.results.forEach((r, i) => {
            if (r.outcome?.$case !== "value" || r.outcome.value !== fresh[i]) problems.push(`fresh ${i}: ${JSON.stringify(r.outcome)}`);
          });
          calls++;
        }
        return { calls, problems };
      };
      const liveA = traffic(a, 1);
      const liveC = traffic(c, 2);
      const [runA, runC] = await Promise.all([
        admin(a).rewrap({ category: CATEGORY, batchSize: 200 }),
        admin(c, "sec-admin-2").rewrap({ category: CATEGORY, batchSize: 200 }),
      ]).finally(() => (rewrapping = false));
      const [ta, tc] = await Promise.all([liveA, liveC]);

      const doneA = runA.messages[runA.messages.length - 1]!;
      const doneC = runC.messages[runC.messages.length - 1]!;
      expect(doneA.remaining).toBe(0);
      expect(doneC.remaining).toBe(0);
      // Each DEK was re-wrapped by exactly one of them: the two counts add up to the total.
      expect(doneA.done + doneC.done).toBe(TOTAL);
      expect(await batchSum(4)).toBe(TOTAL);
      expect(await countUnder(3)).toBe(0);
      expect(ta.problems).toEqual([]);
      expect(tc.problems).toEqual([]);
      expect(ta.calls).toBeGreaterThanOrEqual(3);
      expect(tc.calls).toBeGreaterThanOrEqual(3);
    } finally {
      await c.stop();
    }
  });

  it("afterwards every token detokenizes to its original value and every value ciphertext is byte-for-byte unchanged", async () => {
    const versions = await sql<{ kek_version: number; n: number }>(
      "SELECT kek_version, count(*)::int AS n FROM tokens WHERE category = $1 AND id = ANY($2::text[]) GROUP BY kek_version",
      [CATEGORY, tokens],
    );
    expect(versions).toEqual([{ kek_version: 4, n: TOTAL }]);
    const after = await ciphertexts();
    let unchanged = 0;
    for (const [id, before] of ciphertextBefore) if (after.get(id) === before) unchanged++;
    expect(unchanged).toBe(TOTAL);

    let matched = 0;
    for (let i = 0; i < TOTAL; i += CALL) {
      const { results } = await pay(a).detokenize({ tokens: tokens.slice(i, i + CALL), purpose: "payment_authorization", justification: "REWRAP-CHECK" });
      results.forEach((r, j) => {
        if (r.outcome?.$case === "value" && r.outcome.value === values[i + j]) matched++;
      });
    }
    expect(matched).toBe(TOTAL);
    const listed = (await admin(a).list(CATEGORY)).categories[0]!;
    expect(listed.versions.map((v) => [v.version, v.tokens])).toEqual([
      [1, 0],
      [2, 0],
      [3, 0],
      [4, expect.any(Number)],
    ]);
    expect(listed.versions[3]!.tokens).toBeGreaterThanOrEqual(TOTAL);
  });
});
