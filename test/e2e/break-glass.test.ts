import { status } from "@grpc/grpc-js";
import type {
  ApproveBreakGlassResponse,
  DetokenizeResponse,
  RequestBreakGlassRequest,
  RequestBreakGlassResponse,
} from "../../src/gen/fieldvault/v1/token_service";
import { call, clients, type Clients, codeOf, tokenApi } from "../helpers/client";
import { issueClientCertificate, TLS_ENV } from "../helpers/tls";
import { startTestVault, type TestVault } from "../helpers/vault";

const PAN = "4111111111111111";
const NAME = "Tran Thi B";
const nextYear = new Date().getUTCFullYear() + 1;

function bgApi(c: Clients, caller: string | undefined) {
  const t = c.tokens;
  return {
    request: (req: Partial<RequestBreakGlassRequest>) =>
      call(t, t.requestBreakGlass as never, caller, { categories: [], purpose: "", justification: "", durationSeconds: 0, ...req }) as Promise<RequestBreakGlassResponse>,
    approve: (requestId: string) => call(t, t.approveBreakGlass as never, caller, { requestId }) as Promise<ApproveBreakGlassResponse>,
    detokenize: (tokens: string[], purpose: string, breakGlassId?: string) =>
      call(t, t.detokenize as never, caller, { tokens, purpose, justification: "FRAUD-7", breakGlassId }) as Promise<DetokenizeResponse>,
  };
}

const fraudRequest = { categories: ["card_number", "cardholder_name"], purpose: "fraud_investigation", justification: "FRAUD-7 chargeback ring", durationSeconds: 600 };

/** Break-glass (DESIGN §15; issue 13.5, 10.4) against a real vault on PostgreSQL and Redis, tried as an insider would. */
describe("break-glass (postgres + redis)", () => {
  jest.setTimeout(120_000);
  let t: TestVault;
  let tokens: string[]; // card_number, cardholder_name, card_expiry
  const analyst = () => bgApi(t.clients, "fraud-analyst");
  const lead = () => bgApi(t.clients, "security-lead");
  const entries = async (where: string, params: unknown[]) =>
    (await t.vault.db.query<Record<string, string>>(`SELECT * FROM access_log WHERE ${where} ORDER BY seq`, params)).rows;

  beforeAll(async () => {
    t = await startTestVault("postgres");
    const res = await tokenApi(t.clients, "payment-service").tokenize({
      fields: [
        { category: "card_number", value: PAN },
        { category: "cardholder_name", value: NAME },
        { category: "card_expiry", value: `12/${nextYear}` },
      ],
      ttlSeconds: 0,
      subjectRef: "",
    });
    tokens = res.tokens.map((x) => x.token);
  });
  afterAll(async () => t?.stop());

  it("without a grant the analyst reveals nothing", async () => {
    const { results } = await analyst().detokenize(tokens, "fraud_investigation");
    expect(results.map((r) => r.outcome?.$case === "error" && r.outcome.value.code)).toEqual(["PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED"]);
  });

  describe("one grant from request to reveal", () => {
    let id: string;
    beforeAll(async () => {
      const r = await analyst().request(fraudRequest);
      expect(r.status).toBe("PENDING_APPROVAL");
      id = r.requestId;
    });

    it("logs the request with the grant id, categories, purpose and justification", async () => {
      const [e] = await entries("action = 'break_glass_request' AND outcome = 'pending_approval'", []);
      expect(e).toMatchObject({ caller: "fraud-analyst", category: "card_number,cardholder_name", purpose: "fraud_investigation", justification: "FRAUD-7 chargeback ring" });
      expect(e!.detail).toBe(`break_glass_id=${id} duration_seconds=600`);
    });

    it("refuses an unapproved grant, and logs the refusal with its id", async () => {
      const { code, details } = await codeOf(analyst().detokenize(tokens.slice(0, 1), "fraud_investigation", id));
      expect(code).toBe(status.PERMISSION_DENIED);
      expect(details).toContain("not been approved");
      const rows = await entries("action = 'detokenize' AND outcome = 'denied' AND caller = 'fraud-analyst' AND position($1 IN detail) > 0", [id]);
      expect(rows).toHaveLength(1);
    });

    it("refuses self-approval, by the same or another identity of the requesting caller, and an approver without approve_break_glass", async () => {
      for (const who of ["fraud-analyst", "spiffe://ego/fraud-analyst"]) {
        const { code, details } = await codeOf(bgApi(t.clients, who).approve(id));
        expect(code).toBe(status.PERMISSION_DENIED);
        expect(details).toContain("second, different caller");
      }
      const other = await codeOf(bgApi(t.clients, "sec-admin-1").approve(id));
      expect(other.code).toBe(status.PERMISSION_DENIED);
      expect(other.details).toContain("may not approve");
      const refusals = await entries("action = 'break_glass_approve' AND outcome = 'denied'", []);
      expect(refusals.map((r) => r.caller)).toEqual(["fraud-analyst", "spiffe://ego/fraud-analyst", "sec-admin-1"]);
      for (const r of refusals) expect(r.detail).toContain(`break_glass_id=${id}`);
      const { rows } = await t.vault.db.query("SELECT approved_at FROM break_glass_grants WHERE id = $1", [id]);
      expect(rows).toEqual([{ approved_at: null }]);
    });

    it("security-lead approves once; the grant expires after its duration; a second approval is refused", async () => {
      const before = Date.now();
      const r = await lead().approve(id);
      expect(r.status).toBe("APPROVED");
      expect(r.expiresAt!.getTime()).toBeGreaterThanOrEqual(before + 600_000 - 1000);
      expect(r.expiresAt!.getTime()).toBeLessThanOrEqual(Date.now() + 600_000 + 1000);
      const again = await codeOf(lead().approve(id));
      expect(again.code).toBe(status.FAILED_PRECONDITION);
      const [e] = await entries("action = 'break_glass_approve' AND outcome = 'approved'", []);
      expect(e!.caller).toBe("security-lead");
      expect(e!.detail).toContain(`break_glass_id=${id} requested_by=fraud-analyst`);
    });

    it("reveals exactly the granted categories for the granted purpose; each reveal is logged with the grant id, a WARN line and a metric", async () => {
      const { results } = await analyst().detokenize(tokens, "fraud_investigation", id);
      expect(results[0]!.outcome).toEqual({ $case: "value", value: PAN });
      expect(results[1]!.outcome).toEqual({ $case: "value", value: NAME });
      expect(results[2]!.outcome).toMatchObject({ $case: "error", value: { code: "PERMISSION_DENIED" } });
      const rows = await entries("action = 'detokenize' AND caller = 'fraud-analyst' AND outcome = 'allowed'", []);
      expect(rows.map((r) => [r.category, r.detail, r.purpose])).toEqual([
        ["card_number", `break_glass_id=${id}`, "fraud_investigation"],
        ["cardholder_name", `break_glass_id=${id}`, "fraud_investigation"],
      ]);
      const denied = await entries("action = 'detokenize' AND caller = 'fraud-analyst' AND category = 'card_expiry' AND position($1 IN detail) > 0", [id]);
      expect(denied.map((r) => r.outcome)).toEqual(["denied"]);
      const warns = t.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === "break-glass reveal");
      expect(warns.map((w) => [w.level, w.breakGlassId, w.category])).toEqual([
        ["warn", id, "card_number"],
        ["warn", id, "cardholder_name"],
      ]);
      expect(t.logs.join("\n")).not.toContain(PAN);
      const metric = await t.vault.metrics.registry.getSingleMetricAsString("fieldvault_break_glass_reveals_total");
      expect(metric).toContain('fieldvault_break_glass_reveals_total{caller="fraud-analyst",category="card_number"} 1');
      expect(metric).toContain('fieldvault_break_glass_reveals_total{caller="fraud-analyst",category="cardholder_name"} 1');
    });

    it("refuses the grant for another purpose and for another caller, logged with its id", async () => {
      const purpose = await codeOf(analyst().detokenize(tokens.slice(0, 1), "customer_support", id));
      expect(purpose.code).toBe(status.PERMISSION_DENIED);
      expect(purpose.details).toContain("is for purpose fraud_investigation");
      const thief = await codeOf(bgApi(t.clients, "support-desk").detokenize(tokens.slice(0, 1), "fraud_investigation", id));
      expect(thief.code).toBe(status.PERMISSION_DENIED);
      expect(thief.details).toContain("belongs to another caller");
      const rows = await entries("action = 'detokenize' AND outcome = 'denied' AND position($1 IN detail) > 0 AND caller IN ('support-desk', 'fraud-analyst')", [id]);
      expect(rows.map((r) => r.caller)).toEqual(expect.arrayContaining(["fraud-analyst", "support-desk"]));
    });

    it("works from another instance on the same database (the grant lives in PostgreSQL)", async () => {
      const other = await startTestVault("postgres", {}, { db: t.db, redisPrefix: t.redisPrefix });
      try {
        const { results } = await bgApi(other.clients, "fraud-analyst").detokenize(tokens.slice(0, 1), "fraud_investigation", id);
        expect(results[0]!.outcome).toEqual({ $case: "value", value: PAN });
      } finally {
        await other.stop();
      }
    });
  });

  it("refuses an expired grant", async () => {
    const { requestId } = await analyst().request({ ...fraudRequest, durationSeconds: 1 });
    await lead().approve(requestId);
    await new Promise((r) => setTimeout(r, 1300));
    const { code, details } = await codeOf(analyst().detokenize(tokens.slice(0, 1), "fraud_investigation", requestId));
    expect(code).toBe(status.PERMISSION_DENIED);
    expect(details).toContain("expired");
  });

  it("refuses requests outside the policy's break_glass rule, and bad input naming the field; each refusal logged", async () => {
    const cvv = await codeOf(analyst().request({ ...fraudRequest, categories: ["card_cvv"] }));
    expect(cvv.code).toBe(status.PERMISSION_DENIED);
    const purpose = await codeOf(analyst().request({ ...fraudRequest, purpose: "refund" }));
    expect(purpose.code).toBe(status.PERMISSION_DENIED);
    const stranger = await codeOf(bgApi(t.clients, "support-desk").request(fraudRequest));
    expect(stranger.code).toBe(status.PERMISSION_DENIED);
    const long = await codeOf(analyst().request({ ...fraudRequest, durationSeconds: 3601 }));
    expect(long.code).toBe(status.INVALID_ARGUMENT);
    expect(long.details).toContain("duration_seconds: at most 3600");
    const noWhy = await codeOf(analyst().request({ ...fraudRequest, justification: "" }));
    expect(noWhy.details).toContain("justification: required");
    const badId = await codeOf(lead().approve("nope"));
    expect(badId.code).toBe(status.INVALID_ARGUMENT);
    const unknown = await codeOf(lead().approve("bg_doesnotexist"));
    expect(unknown.code).toBe(status.NOT_FOUND);
    const rows = await entries("action = 'break_glass_request' AND outcome <> 'pending_approval'", []);
    expect(rows.map((r) => r.outcome)).toEqual(["denied", "denied", "denied", "invalid_argument", "invalid_argument"]);
    const approvals = await entries("action = 'break_glass_approve' AND outcome IN ('invalid_argument', 'not_found')", []);
    expect(approvals.map((r) => r.detail)).toEqual([expect.stringContaining("break_glass_id=(malformed)"), expect.stringContaining("break_glass_id=bg_doesnotexist")]);
  });
});

/** Issue 10.4 for break-glass: two certificates of one policy caller are one person (minted certificates, mutual TLS). */
describe("break-glass over mutual TLS compares policy callers", () => {
  jest.setTimeout(120_000);
  let t: TestVault;
  const certs: ReturnType<typeof issueClientCertificate>[] = [];
  const open: Clients[] = [];
  const asCert = (name: string, uri?: string | null) => {
    const c = issueClientCertificate(name, { uri });
    certs.push(c);
    const cl = clients(t.vault.address, c.credentials);
    open.push(cl);
    return cl;
  };
  beforeAll(async () => {
    t = await startTestVault("postgres", TLS_ENV);
  });
  afterAll(async () => {
    for (const c of open) c.close();
    await t?.stop();
    for (const c of certs) c.cleanup();
  });

  it("a CN-only certificate of the requester cannot approve; the lead can; the grant is bound to the caller, not the certificate", async () => {
    const spiffe = asCert("fraud-analyst");
    const cnOnly = asCert("fraud-analyst", null);
    const leadCert = asCert("security-lead");
    const pay = asCert("payment-service");
    const { tokens } = await tokenApi(pay, undefined).tokenize({ fields: [{ category: "card_number", value: PAN }], ttlSeconds: 0, subjectRef: "" });
    const { requestId } = await bgApi(spiffe, undefined).request(fraudRequest);
    const self = await codeOf(bgApi(cnOnly, undefined).approve(requestId));
    expect(self.code).toBe(status.PERMISSION_DENIED);
    expect(self.details).toContain("second, different caller");
    await bgApi(leadCert, undefined).approve(requestId);
    const { rows } = await t.vault.db.query("SELECT requester_caller, requested_by, approver_caller, approved_by FROM break_glass_grants WHERE id = $1", [requestId]);
    expect(rows[0]).toEqual({ requester_caller: "fraud-analyst", requested_by: "spiffe://ego/fraud-analyst", approver_caller: "security-lead", approved_by: "spiffe://ego/security-lead" });
    const viaCn = await bgApi(cnOnly, undefined).detokenize([tokens[0]!.token], "fraud_investigation", requestId);
    expect(viaCn.results[0]!.outcome).toEqual({ $case: "value", value: PAN });
    const thief = await codeOf(bgApi(pay, undefined).detokenize([tokens[0]!.token], "fraud_investigation", requestId));
    expect(thief.code).toBe(status.PERMISSION_DENIED);
  });
});

/** The embedded default (PGlite) keeps grants in the same table, through the same SQL. */
describe("break-glass on the embedded store", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("embedded");
  });
  afterAll(async () => t?.stop());

  it("request, refused self-approval, approval by the lead, reveal of the granted category only", async () => {
    const { tokens } = await tokenApi(t.clients, "payment-service").tokenize({
      fields: [
        { category: "card_number", value: PAN },
        { category: "card_expiry", value: `01/${nextYear}` },
      ],
      ttlSeconds: 0,
      subjectRef: "",
    });
    const analyst = bgApi(t.clients, "spiffe://ego/fraud-analyst");
    const { requestId } = await analyst.request({ ...fraudRequest, categories: ["card_number"] });
    expect((await codeOf(bgApi(t.clients, "fraud-analyst").approve(requestId))).code).toBe(status.PERMISSION_DENIED);
    await bgApi(t.clients, "security-lead").approve(requestId);
    const { results } = await analyst.detokenize(tokens.map((x) => x.token), "fraud_investigation", requestId);
    expect(results[0]!.outcome).toEqual({ $case: "value", value: PAN });
    expect(results[1]!.outcome).toMatchObject({ $case: "error", value: { code: "PERMISSION_DENIED" } });
    const { rows } = await t.vault.db.query<{ detail: string }>("SELECT detail FROM access_log WHERE action = 'detokenize' AND outcome = 'allowed'", []);
    expect(rows.map((r) => r.detail)).toEqual([`break_glass_id=${requestId}`]);
  });
});
