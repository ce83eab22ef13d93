import { randomBytes } from "node:crypto";
import { Metadata, type ServiceError } from "@grpc/grpc-js";
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { startVault, type Vault } from "../../src/app";
import { loadConfig } from "../../src/config/config";
import type { DetokenizeResponse, TokenizeResponse } from "../../src/gen/fieldvault/v1/token_service";
import { CALLER_HEADER } from "../../src/transport/grpc/identity";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { clients, type Clients } from "../helpers/client";
import { Writable } from "node:stream";

/**
 * OpenTelemetry: the caller's W3C traceparent is continued, each RPC is a server span with child
 * spans for policy, lookup, the commit flush it joined, and Redis; no attribute holds a value or a
 * token; every log line of a traced call carries trace_id and span_id.
 */

const PAN = "4111111111111111";
const CVV = "737";
const NAME = "Trace Holder";

const parentOf = (s: ReadableSpan) =>
  (s as unknown as { parentSpanContext?: { spanId: string } }).parentSpanContext?.spanId ?? (s as unknown as { parentSpanId?: string }).parentSpanId;

describe("tracing with OpenTelemetry", () => {
  jest.setTimeout(60_000);
  const exporter = new InMemorySpanExporter();
  let vault: Vault;
  let db: TestDatabase;
  let prefix: string;
  let c: Clients;
  const logs: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    prefix = newRedisPrefix();
    const config = loadConfig({
      FIELDVAULT_LISTEN: "127.0.0.1:0",
      FIELDVAULT_METRICS_LISTEN: "off",
      FIELDVAULT_DATABASE_URL: db.url,
      FIELDVAULT_REDIS_URL: REDIS_URL,
      FIELDVAULT_REDIS_PREFIX: prefix,
      FIELDVAULT_TRACING: "on",
      FIELDVAULT_SHUTDOWN_GRACE_MS: "2000",
    });
    expect(config.tracing).toBe(true);
    const sink = new Writable({
      write(chunk, _e, cb) {
        logs.push(...String(chunk).split("\n").filter(Boolean));
        cb();
      },
    });
    vault = await startVault(config, { logDestination: sink, spanProcessor: new SimpleSpanProcessor(exporter) });
    c = clients(vault.address);
  });
  afterAll(async () => {
    c?.close();
    await vault?.close();
    await db?.drop();
    if (prefix) await dropRedisPrefix(prefix);
  });

  function traced<Res>(method: "tokenize" | "detokenize", req: unknown, traceId: string, parentId: string): Promise<Res> {
    const md = new Metadata();
    md.set(CALLER_HEADER, "payment-service");
    md.set("traceparent", `00-${traceId}-${parentId}-01`);
    return new Promise((resolve, reject) =>
      (c.tokens[method] as unknown as (r: unknown, m: Metadata, cb: (e: ServiceError | null, r: Res) => void) => void).call(c.tokens, req, md, (e, r) =>
        e ? reject(e) : resolve(r),
      ),
    );
  }

  it("continues the caller's trace and builds the span tree, with no value or token in any attribute", async () => {
    const traceId = randomBytes(16).toString("hex");
    const callerSpan = randomBytes(8).toString("hex");
    const tok = await traced<TokenizeResponse>(
      "tokenize",
      { fields: [{ category: "card_number", value: PAN }, { category: "card_cvv", value: CVV }, { category: "cardholder_name", value: NAME }], ttlSeconds: 0, subjectRef: "" },
      traceId,
      callerSpan,
    );
    const tokens = tok.tokens.map((t) => t.token);
    const traceId2 = randomBytes(16).toString("hex");
    const callerSpan2 = randomBytes(8).toString("hex");
    const det = await traced<DetokenizeResponse>("detokenize", { tokens, purpose: "payment_authorization", justification: "TRACE-1" }, traceId2, callerSpan2);
    expect(det.results.map((r) => r.outcome)).toEqual([
      { $case: "value", value: PAN },
      { $case: "value", value: CVV },
      { $case: "value", value: "Trace Holder" },
    ]);
    await new Promise((r) => setTimeout(r, 50));

    const spans = exporter.getFinishedSpans();
    for (const [tid, parent, method] of [
      [traceId, callerSpan, "Tokenize"],
      [traceId2, callerSpan2, "Detokenize"],
    ] as const) {
      const inTrace = spans.filter((s) => s.spanContext().traceId === tid);
      const rpc = inTrace.find((s) => s.name === `fieldvault.v1.TokenService/${method}`);
      expect(rpc).toBeDefined();
      expect(parentOf(rpc!)).toBe(parent);
      expect(rpc!.attributes["rpc.grpc.status_code"]).toBe(0);
      // Every other span of the call descends from the RPC span.
      const ids = new Set([rpc!.spanContext().spanId]);
      let grew = true;
      while (grew) {
        grew = false;
        for (const s of inTrace) if (!ids.has(s.spanContext().spanId) && ids.has(parentOf(s) ?? "")) (ids.add(s.spanContext().spanId), (grew = true));
      }
      expect(ids.size).toBe(inTrace.length);
      const names = new Set(inTrace.map((s) => s.name));
      expect(names).toContain("policy");
      expect(names).toContain("access_log.commit");
      const commit = inTrace.find((s) => s.name === "access_log.commit")!;
      expect(commit.attributes["fieldvault.flush.jobs"]).toBeGreaterThanOrEqual(1);
      if (method === "Tokenize") expect(names).toContain("redis.cvv.put");
      if (method === "Detokenize") {
        expect(names).toContain("lookup");
        expect(names).toContain("redis.rate_budget.take");
        expect([...names].some((n) => n.startsWith("redis.cvv."))).toBe(true);
        const decisions = inTrace.filter((s) => s.name === "policy").map((s) => [s.attributes["fieldvault.category"], s.attributes["fieldvault.purpose"], s.attributes["fieldvault.policy.allowed"]]);
        expect(decisions).toContainEqual(["card_number", "payment_authorization", true]);
      }
    }

    // No attribute anywhere carries a value or a token.
    const secrets = [PAN, CVV, NAME, "4111 1111 1111 1111", ...tokens];
    for (const s of spans) {
      for (const v of Object.values(s.attributes)) for (const x of secrets) expect(String(v)).not.toContain(x);
      for (const e of s.events) for (const v of Object.values(e.attributes ?? {})) for (const x of secrets) expect(String(v)).not.toContain(x);
    }

    // The call's JSON log line carries the trace and the RPC span's ids.
    const lines = logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.trace_id === traceId2);
    expect(lines.length).toBeGreaterThan(0);
    const rpc2 = spans.find((s) => s.spanContext().traceId === traceId2 && s.name.endsWith("/Detokenize"))!;
    expect(lines.some((l) => l.method === "Detokenize" && l.span_id === rpc2.spanContext().spanId)).toBe(true);
  });

  it("starts a new trace when the caller sends none, and keeps the call's log lines on it", async () => {
    exporter.reset();
    const md = new Metadata();
    md.set(CALLER_HEADER, "payment-service");
    await new Promise((resolve, reject) =>
      c.tokens.tokenize({ fields: [{ category: "cardholder_name", value: "No Parent" }], ttlSeconds: 0, subjectRef: "" }, md, (e, r) => (e ? reject(e) : resolve(r))),
    );
    const rpc = exporter.getFinishedSpans().find((s) => s.name === "fieldvault.v1.TokenService/Tokenize")!;
    expect(rpc).toBeDefined();
    expect(parentOf(rpc)).toBeUndefined();
  });
});

describe("tracing is off unless OpenTelemetry's own variables or FIELDVAULT_TRACING ask for it", () => {
  it.each([
    [{}, false],
    [{ FIELDVAULT_TRACING: "on" }, true],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }, true],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://127.0.0.1:4318/v1/traces" }, true],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_SDK_DISABLED: "true" }, false],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", FIELDVAULT_TRACING: "off" }, false],
  ])("%j → %s", (env, on) => {
    expect(loadConfig({ FIELDVAULT_DATA_DIR: "memory://", ...env }).tracing).toBe(on);
  });
});
