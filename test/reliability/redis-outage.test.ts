import { startTestVault, type TestVault } from "../helpers/vault";
import { startOwnRedis, type OwnRedis } from "./helpers/own-redis";
import { policyFile } from "./helpers/policy-file";
import { waitFor } from "./helpers/ports";
import { codeName, tokens, valuesOf } from "./helpers/rpc";
import { NON_CVV } from "../helpers/samples";

/**
 * Redis goes silent (SIGSTOP), then dies (SIGKILL) and comes back empty. CVVs — which live only in
 * Redis — fail UNAVAILABLE within the deadline; every other category keeps working; rate budgets
 * fall back to each instance's local budget; CVVs work again once Redis is back.
 */
describe("Redis outage", () => {
  let redis: OwnRedis;
  let t: TestVault;
  const DEADLINE_MS = 5000;
  const TINY = 5;

  beforeAll(async () => {
    redis = await startOwnRedis();
    const policy = policyFile((d) => {
      d.callers["tiny-budget"] = {
        identities: ["tiny-budget"],
        tokenize: ["phone"],
        detokenize: { phone: ["customer_support"] },
        detokenize_per_minute: TINY,
      };
    });
    t = await startTestVault("postgres", { FIELDVAULT_REDIS_URL: redis.url, FIELDVAULT_POLICY_FILE: policy });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    await redis?.destroy();
  }, 60_000);

  const pay = () => tokens(t.clients, "payment-service", DEADLINE_MS);

  /** Every non-CVV category tokenizes and detokenizes to its value. */
  async function othersWork(tag: string) {
    for (const s of NON_CVV) {
      const tok = await tokens(t.clients, s.caller, DEADLINE_MS).tokenize([{ category: s.category, value: s.value }]);
      expect({ tag, category: s.category, code: codeName(tok.code) }).toEqual({ tag, category: s.category, code: "OK" });
      const read = await tokens(t.clients, s.caller, DEADLINE_MS).detokenize([tok.value!.tokens[0]!.token], s.purpose);
      expect({ tag, category: s.category, value: valuesOf(read.value)[0] }).toEqual({ tag, category: s.category, value: s.normal });
    }
  }

  /** A CVV call during the outage: tokenize fails UNAVAILABLE; detokenize fails UNAVAILABLE (whole call or that item). */
  async function cvvsUnavailable(cvvToken: string) {
    const tok = await pay().tokenize([{ category: "card_cvv", value: "4821" }]);
    expect(codeName(tok.code)).toBe("UNAVAILABLE");
    expect(tok.ms).toBeLessThan(DEADLINE_MS);
    const read = await pay().detokenize([cvvToken], "payment_authorization");
    expect(read.ms).toBeLessThan(DEADLINE_MS);
    const code = read.ok ? read.value!.results[0]!.outcome : { $case: "status", value: codeName(read.code) };
    expect(code).toEqual(read.ok ? { $case: "error", value: expect.objectContaining({ code: "UNAVAILABLE" }) } : { $case: "status", value: "UNAVAILABLE" });
  }

  it("keeps every other category working, fails CVVs closed, limits locally, and recovers", async () => {
    await othersWork("redis up");
    const before = await pay().tokenize([{ category: "card_cvv", value: "913" }]);
    expect(before.ok).toBe(true);
    const cvvToken = before.value!.tokens[0]!.token;

    // Phase 1: Redis stops answering but keeps the connection (a black hole): command timeouts, no hang.
    redis.pause();
    try {
      await cvvsUnavailable(cvvToken);
      await othersWork("redis paused");
    } finally {
      redis.resume();
    }
    // The CVV was not consumed by the failed attempt: once Redis answers, it reveals once.
    await waitFor("CVVs to work after resume", async () => (await pay().tokenize([{ category: "card_cvv", value: "1234" }])).ok, 10_000);
    const once = await pay().detokenize([cvvToken], "payment_authorization");
    expect(valuesOf(once.value)).toEqual(["913"]);

    // Phase 2: Redis dies (connection refused).
    const lost = await pay().tokenize([{ category: "card_cvv", value: "6284" }]);
    expect(lost.ok).toBe(true);
    await redis.kill();
    await cvvsUnavailable(lost.value!.tokens[0]!.token);
    await othersWork("redis down");

    // Rate budgets fall back to the local budget: one call asks for more than the tiny budget.
    const tiny = tokens(t.clients, "tiny-budget", DEADLINE_MS);
    const phone = await tiny.tokenize([{ category: "phone", value: "+44 20 7946 0001" }]);
    expect(phone.ok).toBe(true);
    const burst = await tiny.detokenize(Array(TINY + 3).fill(phone.value!.tokens[0]!.token), "customer_support");
    expect(burst.ok).toBe(true);
    const outcomes = burst.value!.results.map((r) => (r.outcome?.$case === "value" ? "value" : r.outcome?.value.code));
    expect(outcomes.filter((o) => o === "value")).toHaveLength(TINY);
    expect(outcomes.filter((o) => o === "RESOURCE_EXHAUSTED")).toHaveLength(3);
    const { rows } = await t.vault.db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM access_log WHERE caller = 'tiny-budget' AND outcome = 'rate_limited'",
      [],
    );
    expect(rows[0]!.n).toBe(3);
    expect(t.logs.some((l) => l.includes("enforcing local budgets"))).toBe(true);

    // Redis returns (empty: CVVs it held are gone, by design). New CVVs work again without a restart.
    await redis.start();
    await waitFor("CVVs to work after Redis returns", async () => (await pay().tokenize([{ category: "card_cvv", value: "5555" }])).ok, 15_000);
    const fresh = await pay().tokenize([{ category: "card_cvv", value: "8642" }]);
    const freshRead = await pay().detokenize([fresh.value!.tokens[0]!.token], "payment_authorization");
    expect(valuesOf(freshRead.value)).toEqual(["8642"]);
    const gone = await pay().detokenize([lost.value!.tokens[0]!.token], "payment_authorization");
    expect(gone.value!.results[0]!.outcome).toEqual({ $case: "error", value: expect.objectContaining({ code: "NOT_FOUND" }) });
    await othersWork("redis back");
  }, 90_000);
});
