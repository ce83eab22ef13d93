import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { type ServiceError, status } from "@grpc/grpc-js";
import { fromRoot } from "../../src/config/paths";
import { defaultRegistry } from "../../src/domain/categories";
import { Policy } from "../../src/domain/policy";
import { errorDetailsOf } from "../../src/sdk/error-details";
import { FieldVaultClient, FieldVaultError } from "../../src/sdk";
import { codeOf, logApi, tokenApi } from "../helpers/client";
import { withLuhn } from "../helpers/luhn";
import { startTestVault, type TestVault } from "../helpers/vault";
import { policyFile } from "../reliability/helpers/policy-file";

/**
 * The deterministic-token oracle: a caller that may only tokenize card numbers enumerates the
 * candidates that fit an issuer prefix and last 4, and learns which one is on file from the token
 * it gets back. The tokenize budget stops the enumeration; the log names every token handed out.
 */
describe("deterministic-token oracle", () => {
  const BUDGET = 40;
  let t: TestVault;
  let policy: string;
  const prober = (identity = "card-prober") => tokenApi(t.clients, identity);
  const cards = (n: number, from: number) => Array.from({ length: n }, (_, i) => withLuhn(`411111${String(from + i).padStart(9, "0")}`));

  beforeAll(async () => {
    policy = policyFile((d) => {
      d.callers["card-prober"] = { identities: ["card-prober", "spiffe://ego/card-prober"], tokenize: ["card_number", "cardholder_name"], tokenize_deterministic_per_minute: BUDGET };
      d.callers["card-reader"] = { tokenize: ["card_number"] };
    });
    t = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: policy });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    rmSync(dirname(policy), { recursive: true, force: true });
  });

  it("the default budget is far below the 100,000 candidates in 25 s the review measured", () => {
    const p = Policy.fromFile(fromRoot("policy", "default.yaml"), defaultRegistry().names());
    expect(p.tokenizeDeterministicPerMinute("payment-service")).toBeLessThanOrEqual(10_000);
    expect(p.tokenizeDeterministicPerMinute("booking-service")).toBeLessThanOrEqual(10_000);
  });

  it("stops an enumeration at the budget with RESOURCE_EXHAUSTED, stores nothing past it, and logs the refusal", async () => {
    // The budget is a minute's window: start well inside one, so every call below shares it.
    const into = Date.now() % 60_000;
    if (into > 50_000) await new Promise((r) => setTimeout(r, 60_000 - into + 100));
    const count = async () => (await t.vault.db.query<{ n: number }>("SELECT count(*)::int AS n FROM tokens", [])).rows[0]!.n;
    const first = await prober().tokenize({ fields: cards(30, 0).map((value) => ({ category: "card_number", value })), ttlSeconds: 0, subjectRef: "" });
    expect(first.tokens).toHaveLength(30);
    const before = await count();
    // A second identity of the same policy caller shares the budget (10 left, 30 asked).
    const refused = await prober("spiffe://ego/card-prober")
      .tokenize({ fields: cards(30, 100).map((value) => ({ category: "card_number", value })), ttlSeconds: 0, subjectRef: "" })
      .then(() => undefined, (e: ServiceError) => e);
    const asked = Date.now();
    expect(refused?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(refused?.details).toContain("card_number");
    // Machine-readable, as gRPC's richer error model (what any language's client decodes): why, and
    // when the budget's window ends — no sooner than the next minute, no later than it.
    const why = errorDetailsOf(refused?.metadata);
    expect(why).toMatchObject({ reason: "TOKENIZE_BUDGET_EXCEEDED", domain: "fieldvault.v1", info: { category: "card_number", limit_per_minute: String(BUDGET), requested: "30" } });
    const untilMinute = 60_000 - (asked % 60_000);
    expect(why!.retryAfterMs).toBeGreaterThanOrEqual(untilMinute - 1_000);
    expect(why!.retryAfterMs).toBeLessThanOrEqual(untilMinute + 1_000);
    expect(await count()).toBe(before);
    // The refused call took nothing from the budget: the 10 left are still there, and then none.
    const rest = await prober().tokenize({ fields: cards(10, 200).map((value) => ({ category: "card_number", value })), ttlSeconds: 0, subjectRef: "" });
    expect(rest.tokens).toHaveLength(10);
    const over = await codeOf(prober().tokenize({ fields: cards(1, 300).map((value) => ({ category: "card_number", value })), ttlSeconds: 0, subjectRef: "" }));
    expect(over.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(await count()).toBe(before + 10);
    // Random categories are not budgeted.
    const names = await prober().tokenize({ fields: [{ category: "cardholder_name", value: "Not Budgeted" }], ttlSeconds: 0, subjectRef: "" });
    expect(names.tokens).toHaveLength(1);
    const { rows } = await t.vault.db.query<{ caller: string; outcome: string }>(
      "SELECT caller, outcome FROM access_log WHERE action = 'tokenize' AND outcome = 'rate_limited'",
      [],
    );
    expect(rows.map((r) => `${r.caller} ${r.outcome}`).sort()).toEqual(["card-prober rate_limited", "spiffe://ego/card-prober rate_limited"]);
    const metric = await t.vault.metrics.registry.getSingleMetric("fieldvault_deterministic_tokenize_fields_total")!.get();
    expect(metric.values.find((v) => v.labels.caller === "card-prober" && v.labels.category === "card_number")?.value).toBe(40);
  });

  it("the SDK's error says when to try again (retryAfterMs) and why (TOKENIZE_BUDGET_EXCEEDED)", async () => {
    // More card numbers than the whole budget: refused whatever is left of this minute.
    const sdk = new FieldVaultClient({ address: t.vault.address, caller: "card-prober", retry: { attempts: 1 } });
    try {
      const err = await sdk.tokenize(cards(BUDGET + 1, 500).map((value) => ({ category: "card_number", value }))).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(FieldVaultError);
      const e = err as FieldVaultError;
      expect(e.codeName).toBe("RESOURCE_EXHAUSTED");
      expect(e.errorDetails?.reason).toBe("TOKENIZE_BUDGET_EXCEEDED");
      expect(e.retryAfterMs).toBeGreaterThan(0);
      expect(e.retryAfterMs).toBeLessThanOrEqual(60_000);
      expect(e.message).not.toContain("4111");
    } finally {
      sdk.close();
    }
  });

  it("logs every token a tokenize handed out, so a token's creator (and every later holder) can be found", async () => {
    const pan = withLuhn("520082828282821");
    const mine = await tokenApi(t.clients, "payment-service").tokenize({
      fields: [
        { category: "card_number", value: pan },
        { category: "cardholder_name", value: "Log Me" },
      ],
      ttlSeconds: 0,
      subjectRef: "",
    });
    const token = mine.tokens[0]!.token;
    const probe = await tokenApi(t.clients, "card-reader").tokenize({ fields: [{ category: "card_number", value: pan }], ttlSeconds: 0, subjectRef: "" });
    expect(probe.tokens[0]!.token).toBe(token);
    const entries = await logApi(t.clients, "ir-analyst").query({ token });
    const tokenizes = entries.filter((e) => e.action === "tokenize").map((e) => ({ caller: e.caller, category: e.category, detail: e.detail }));
    expect(tokenizes).toEqual(
      expect.arrayContaining([
        { caller: "payment-service", category: "card_number", detail: "fields=2" },
        { caller: "card-reader", category: "card_number", detail: "fields=1 existing" },
      ]),
    );
    expect(tokenizes).toHaveLength(2);
    const nameEntries = await logApi(t.clients, "ir-analyst").query({ token: mine.tokens[1]!.token });
    expect(nameEntries.map((e) => e.action)).toContain("tokenize");
  });
});
