import { codeOf, tokenApi } from "../helpers/client";
import { leaksIn, PLANTED } from "../helpers/planted";
import { startTestVault, type TestVault } from "../helpers/vault";

async function scrape(address: string): Promise<string> {
  const res = await fetch(`http://${address}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  return res.text();
}

/** The value of one series, e.g. sample(text, 'fieldvault_rpc_total{method="Tokenize",code="OK"}'). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("metrics over HTTP", () => {
  let t: TestVault;
  const tokens: string[] = [];

  beforeAll(async () => {
    t = await startTestVault("postgres", { FIELDVAULT_METRICS_LISTEN: "127.0.0.1:0", FIELDVAULT_HEALTH_INTERVAL_MS: "200" });
    // A few calls of every kind: every category tokenized and revealed, plus refusals and misses.
    for (const p of PLANTED) {
      const api = tokenApi(t.clients, p.caller);
      const { tokens: out } = await api.tokenize({ fields: [{ category: p.category, value: p.value }], ttlSeconds: 0, subjectRef: "" });
      tokens.push(out[0]!.token);
      const { results } = await api.detokenize({ tokens: [out[0]!.token], purpose: p.purpose, justification: "METRICS-1" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: p.normal });
    }
    const pay = tokenApi(t.clients, "payment-service");
    const card = tokens[0]!;
    await pay.detokenize({ tokens: [card], purpose: "marketing", justification: "" }); // denied
    await pay.detokenize({ tokens: ["tok_0000000000000000000000"], purpose: "refund", justification: "" }); // not found
    await codeOf(pay.tokenize({ fields: [{ category: "card_number", value: "1234" }], ttlSeconds: 0, subjectRef: "" }));
    // An identity the policy does not know, carrying a planted value in its name.
    await codeOf(tokenApi(t.clients, `intruder-${PLANTED[0]!.normal}`).detokenize({ tokens: [card], purpose: "refund", justification: "" }));
    await pay.inspect({ tokens: [card] });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("serves RPCs by method and status, with latency histograms", async () => {
    const m = await scrape(t.vault.metricsAddress!);
    expect(sample(m, 'fieldvault_rpc_total{method="Tokenize",code="OK"}')).toBe(PLANTED.length);
    expect(sample(m, 'fieldvault_rpc_total{method="Tokenize",code="INVALID_ARGUMENT"}')).toBe(1);
    expect(sample(m, 'fieldvault_rpc_total{method="Detokenize",code="PERMISSION_DENIED"}')).toBe(1);
    expect(sample(m, 'fieldvault_rpc_total{method="InspectTokens",code="OK"}')).toBe(1);
    expect(sample(m, 'fieldvault_rpc_duration_seconds_count{method="Detokenize",code="OK"}')).toBe(PLANTED.length + 2);
    expect(sample(m, 'fieldvault_rpc_duration_seconds_bucket{le="+Inf",method="Detokenize",code="OK"}')).toBe(PLANTED.length + 2);
    expect(m).toContain("# TYPE fieldvault_rpc_duration_seconds histogram");
  });

  it("serves detokenizations by caller, category, purpose and outcome", async () => {
    const m = await scrape(t.vault.metricsAddress!);
    for (const p of PLANTED) {
      expect(sample(m, `fieldvault_detokenize_items_total{caller="${p.caller}",category="${p.category}",purpose="${p.purpose}",outcome="allowed"}`)).toBe(1);
    }
    expect(sample(m, 'fieldvault_detokenize_items_total{caller="payment-service",category="card_number",purpose="marketing",outcome="denied"}')).toBe(1);
    expect(sample(m, 'fieldvault_detokenize_items_total{caller="payment-service",category="none",purpose="refund",outcome="not_found"}')).toBe(1);
  });

  it("serves access-log commit latency and batch size", async () => {
    const m = await scrape(t.vault.metricsAddress!);
    expect(sample(m, 'fieldvault_access_log_commit_seconds_count{outcome="ok"}')).toBeGreaterThanOrEqual(PLANTED.length * 2);
    expect(sample(m, "fieldvault_access_log_batch_entries_sum")).toBeGreaterThanOrEqual(PLANTED.length * 2);
    expect(sample(m, "fieldvault_access_log_batch_calls_count")).toBeGreaterThan(0);
  });

  it("serves key versions by state, database pool and Redis health", async () => {
    const m = await scrape(t.vault.metricsAddress!);
    for (const p of PLANTED) {
      expect(sample(m, `fieldvault_key_versions{category="${p.category}",state="active"}`)).toBe(1);
      expect(sample(m, `fieldvault_key_versions{category="${p.category}",state="destroyed"}`)).toBe(0);
    }
    expect(sample(m, "fieldvault_db_up")).toBe(1);
    expect(sample(m, "fieldvault_db_pool_max")).toBe(16);
    // Admission by items: the limit, and (idle between calls) nothing in progress or waiting.
    expect(sample(m, "fieldvault_items_in_flight_max")).toBe(5000);
    expect(sample(m, "fieldvault_items_in_flight")).toBe(0);
    expect(sample(m, "fieldvault_calls_waiting_for_items")).toBe(0);
    // The Redis probe runs beside the health probe; wait for one round.
    const end = Date.now() + 10000;
    let redisUp = sample(m, "fieldvault_redis_up");
    while (redisUp !== 1 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      redisUp = sample(await scrape(t.vault.metricsAddress!), "fieldvault_redis_up");
    }
    expect(redisUp).toBe(1);
  });

  it("never carries a value, a token or a made-up identity", async () => {
    const m = await scrape(t.vault.metricsAddress!);
    expect(leaksIn(m, tokens)).toEqual([]);
    expect(m).not.toContain("intruder");
    expect(sample(m, 'fieldvault_rpc_total{method="Detokenize",code="PERMISSION_DENIED"}')).toBe(1);
  });

  it("answers 404 off /metrics", async () => {
    const res = await fetch(`http://${t.vault.metricsAddress}/`);
    expect(res.status).toBe(404);
  });

  it("keeps one registry per vault instance", async () => {
    const other = await startTestVault("embedded", { FIELDVAULT_METRICS_LISTEN: "127.0.0.1:0" });
    try {
      await tokenApi(other.clients, "payment-service").tokenize({ fields: [{ category: "cardholder_name", value: "Other Vault" }], ttlSeconds: 0, subjectRef: "" });
      const mine = await scrape(other.vault.metricsAddress!);
      expect(sample(mine, 'fieldvault_rpc_total{method="Tokenize",code="OK"}')).toBe(1);
      expect(sample(mine, "fieldvault_db_pool_max")).toBeUndefined();
      // In-process stand-ins for Redis: the series is absent (as its help says), not a misleading 0.
      expect(mine).not.toContain("fieldvault_redis_up");
      const first = await scrape(t.vault.metricsAddress!);
      expect(sample(first, 'fieldvault_rpc_total{method="Tokenize",code="OK"}')).toBe(PLANTED.length);
    } finally {
      await other.stop();
    }
  });
});
