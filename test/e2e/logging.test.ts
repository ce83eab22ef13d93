import { Metadata, status } from "@grpc/grpc-js";
import { CALLER_HEADER } from "../../src/transport/grpc/identity";
import { codeOf, tokenApi } from "../helpers/client";
import { leaksIn, PLANTED } from "../helpers/planted";
import { BACKENDS, startTestVault, type TestVault } from "../helpers/vault";

interface CallLine {
  level: string;
  msg: string;
  service?: string;
  time?: string;
  requestId?: string;
  caller?: string;
  method?: string;
  status?: string;
  durationMs?: number;
}

describe.each(BACKENDS)("structured logs on %s", (backend) => {
  let t: TestVault;
  const tokens: string[] = [];
  const details: string[] = [];
  const lines = () => t.logs.map((l) => JSON.parse(l) as CallLine);
  const calls = () => lines().filter((l) => l.msg === "call" || l.msg === "call failed");

  beforeAll(async () => {
    t = await startTestVault(backend);
    const fail = async (p: Promise<unknown>) => details.push((await codeOf(p)).details);

    for (const p of PLANTED) {
      const api = tokenApi(t.clients, p.caller);
      const { tokens: out } = await api.tokenize({ fields: [{ category: p.category, value: p.value }], ttlSeconds: 0, subjectRef: `subject-${p.category}` });
      tokens.push(out[0]!.token);
      const { results } = await api.detokenize({ tokens: [out[0]!.token], purpose: p.purpose, justification: "LOG-1" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: p.normal });
      // Refused for another purpose: a per-item error.
      const denied = await api.detokenize({ tokens: [out[0]!.token], purpose: "marketing", justification: "" });
      expect(denied.results[0]!.outcome?.$case).toBe("error");
      // A caller that may not tokenize it: the whole call is refused.
      await fail(tokenApi(t.clients, "support-desk").tokenize({ fields: [{ category: p.category, value: p.value }], ttlSeconds: 0, subjectRef: "" }));
      // A valid value beside an invalid one (all-or-nothing): INVALID_ARGUMENT, nothing stored.
      await fail(api.tokenize({ fields: [{ category: p.category, value: p.value }, { category: p.category, value: `${p.value}\u0000` }], ttlSeconds: 0, subjectRef: "" }));
      // The value sent as a token, as a purpose and as a category.
      const asToken = await api.detokenize({ tokens: [p.value], purpose: p.purpose, justification: "" });
      expect(asToken.results[0]!.outcome?.$case).toBe("error");
      await fail(api.detokenize({ tokens: [out[0]!.token], purpose: p.normal, justification: "" }).then((r) => {
        if (r.results[0]!.outcome?.$case === "value") throw new Error("revealed for an undeclared purpose");
        throw Object.assign(new Error("per-item refusal"), { code: status.PERMISSION_DENIED, details: "" });
      }));
      await fail(api.tokenize({ fields: [{ category: p.normal, value: p.value }], ttlSeconds: 0, subjectRef: "" }));
    }
    // An unknown caller, no caller at all, an oversized batch, and deletes.
    await fail(tokenApi(t.clients, "nobody-in-policy").detokenize({ tokens, purpose: "refund", justification: "" }));
    await fail(tokenApi(t.clients, undefined).tokenize({ fields: [{ category: "card_number", value: PLANTED[0]!.value }], ttlSeconds: 0, subjectRef: "" }));
    await tokenApi(t.clients, "payment-service").deleteSubject({ subjectRef: "subject-card_number" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("writes one JSON line per call with request id, caller, method, status and duration", async () => {
    const c = calls();
    expect(c.length).toBeGreaterThanOrEqual(PLANTED.length * 7);
    for (const l of c) {
      expect(l.requestId).toMatch(/^req_/);
      // The per-call line has its own writer (no redaction pass): it must keep every other line's format.
      expect(l).toMatchObject({ service: "fieldvault", level: expect.stringMatching(/^(info|warn|error)$/) });
      expect(Number.isNaN(Date.parse(l.time!))).toBe(false);
      expect(l.time).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(typeof l.method).toBe("string");
      expect(typeof l.status).toBe("string");
      expect(typeof l.durationMs).toBe("number");
    }
    expect(c.some((l) => l.caller === "payment-service" && l.method === "Detokenize" && l.status === "OK")).toBe(true);
    expect(c.some((l) => l.caller === "support-desk" && l.method === "Tokenize" && l.status === "PERMISSION_DENIED")).toBe(true);
    expect(c.some((l) => l.method === "Tokenize" && l.status === "INVALID_ARGUMENT")).toBe(true);
    expect(c.some((l) => l.caller === undefined && l.status === "UNAUTHENTICATED")).toBe(true);
  });

  it("carries the caller's x-request-id through to the log line", async () => {
    const md = new Metadata();
    md.set(CALLER_HEADER, "payment-service");
    md.set("x-request-id", "req_fromthecaller42");
    await new Promise<void>((resolve, reject) =>
      t.clients.tokens.inspectTokens({ tokens: [tokens[0]!] }, md, (err) => (err ? reject(err) : resolve())),
    );
    expect(calls().some((l) => l.requestId === "req_fromthecaller42" && l.method === "InspectTokens")).toBe(true);
  });

  it("never writes a planted value to any log line", () => {
    expect(t.logs.length).toBeGreaterThan(0);
    const leaking = t.logs.filter((l) => leaksIn(l).length > 0);
    expect(leaking).toEqual([]);
  });

  it("never echoes a planted value in an error message", () => {
    expect(details.length).toBeGreaterThanOrEqual(PLANTED.length * 4);
    expect(details.flatMap((d) => leaksIn(d))).toEqual([]);
  });
});
