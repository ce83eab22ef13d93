import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { status } from "@grpc/grpc-js";
import { DEV_SIGNING_KEY_FILE } from "../../src/config/config";
import { fromRoot } from "../../src/config/paths";
import { loadSigningKey } from "../../src/config/signing-key";
import { signingKeyFromSeed } from "../../src/crypto/signing";
import { readySodium } from "../../src/crypto/sodium";
import { type ErasureStatement, verifyReceipt } from "../../src/domain/erasure-receipt";
import type { SubjectReportRequest, SubjectReportResponse } from "../../src/gen/fieldvault/v1/access_log";
import type { DeleteSubjectResponse } from "../../src/gen/fieldvault/v1/token_service";
import { call, codeOf, tokenApi } from "../helpers/client";
import { startTestVault, type TestVault } from "../helpers/vault";

const TSX = fromRoot("node_modules", ".bin", "tsx");
const MAIN = path.join("src", "cli", "main.ts");
function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(TSX, [MAIN, ...args], { cwd: fromRoot(), timeout: 60_000, env: { ...process.env, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

/** The receipt the way grpcurl prints a DeleteSubject response (protobuf JSON mapping: bytes as base64, camelCase). */
const grpcurlJson = (r: DeleteSubjectResponse) => ({
  erased: r.erased,
  unlinked: r.unlinked,
  receipt: { statement: Buffer.from(r.receipt!.statement).toString("base64"), signature: Buffer.from(r.receipt!.signature).toString("base64"), keyId: r.receipt!.keyId },
});

/** Data-subject rights (DESIGN §14; issue 10.3, issue 13.3–13.4) against a real vault on PostgreSQL and Redis. */
describe("data-subject rights (postgres + redis)", () => {
  jest.setTimeout(120_000);
  let t: TestVault;
  let dir: string;
  const report = (caller: string, req: Partial<SubjectReportRequest>) =>
    call(t.clients.log, t.clients.log.subjectReport as never, caller, { subjectRef: "", pageSize: 0, pageToken: "", ...req }) as Promise<SubjectReportResponse>;
  const pay = () => tokenApi(t.clients, "payment-service");
  const book = () => tokenApi(t.clients, "booking-service");
  const as = (caller: string) => ["--address", t.vault.address, "--caller", caller];

  beforeAll(async () => {
    await readySodium();
    dir = mkdtempSync(path.join(tmpdir(), "fv-receipt-"));
    t = await startTestVault("postgres");
  });
  afterAll(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("payment-service's DeleteSubject erases only what it linked and may delete; booking-service's passport and date of birth survive (issue 10.3)", async () => {
    const travel = await book().tokenize({
      fields: [
        { category: "passport_number", value: "C01X00T47" },
        { category: "date_of_birth", value: "1984-07-02" },
      ],
      ttlSeconds: 0,
      subjectRef: "cust-42",
    });
    const card = await pay().tokenize({
      fields: [
        { category: "card_number", value: "4111 1111 1111 1111" },
        { category: "cardholder_name", value: "Nguyen Van A" },
      ],
      ttlSeconds: 0,
      subjectRef: "cust-42",
    });
    const res = await pay().deleteSubject({ subjectRef: "cust-42" });
    expect(res).toMatchObject({ erased: 2, unlinked: 0 });

    const kept = await book().detokenize({ tokens: travel.tokens.map((x) => x.token), purpose: "airline_manifest", justification: "MAN-1" });
    expect(kept.results.map((r) => r.outcome)).toEqual([
      { $case: "value", value: "C01X00T47" },
      { $case: "value", value: "1984-07-02" },
    ]);
    const gone = await pay().detokenize({ tokens: card.tokens.map((x) => x.token), purpose: "refund", justification: "" });
    expect(gone.results.map((r) => r.outcome)).toEqual([
      expect.objectContaining({ $case: "error", value: expect.objectContaining({ code: "NOT_FOUND" }) }),
      expect.objectContaining({ $case: "error", value: expect.objectContaining({ code: "NOT_FOUND" }) }),
    ]);
    // Booking-service's links are still there, recorded as booking-service's.
    const links = await t.vault.db.query<{ caller: string; n: number }>(
      "SELECT caller, count(*)::int AS n FROM token_subjects WHERE subject_ref = 'cust-42' GROUP BY caller",
      [],
    );
    expect(links.rows).toEqual([{ caller: "booking-service", n: 2 }]);

    // The log's summary entry carries the categories and a keyed hash of the subject, never the reference.
    const summary = await t.vault.db.query<{ category: string; detail: string }>(
      "SELECT category, detail FROM access_log WHERE action = 'delete_subject' AND token = '' AND caller = 'payment-service'",
      [],
    );
    expect(summary.rows).toHaveLength(1);
    expect(summary.rows[0]!.category).toBe("card_number,cardholder_name");
    expect(summary.rows[0]!.detail).toMatch(/subject=sh_[0-9a-f]{32} erased=2 unlinked=0/);
    const leaks = await t.vault.db.query("SELECT seq FROM access_log WHERE position('cust-42' IN detail || justification || token) > 0", []);
    expect(leaks.rows).toEqual([]);

    // Booking-service erases its own; now nothing is linked.
    expect(await book().deleteSubject({ subjectRef: "cust-42" })).toMatchObject({ erased: 2, unlinked: 0 });
    expect((await t.vault.db.query("SELECT 1 FROM token_subjects WHERE subject_ref = 'cust-42'", [])).rows).toEqual([]);
  });

  it("a link from before links recorded their caller is unlinked only by a caller that may delete its category", async () => {
    const { tokens } = await pay().tokenize({ fields: [{ category: "card_number", value: "3566 0020 2036 0505" }], ttlSeconds: 0, subjectRef: "cust-legacy" });
    await t.vault.db.query("UPDATE token_subjects SET caller = '' WHERE subject_ref = 'cust-legacy'", []);
    expect(await book().deleteSubject({ subjectRef: "cust-legacy" })).toMatchObject({ erased: 0, unlinked: 0 });
    expect(await pay().deleteSubject({ subjectRef: "cust-legacy" })).toMatchObject({ erased: 1, unlinked: 0 });
    const { results } = await pay().detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: "" });
    expect(results[0]!.outcome).toMatchObject({ $case: "error", value: { code: "NOT_FOUND" } });
  });

  it("a caller without delete_subject is refused and the refusal is logged", async () => {
    const { code } = await codeOf(tokenApi(t.clients, "support-desk").deleteSubject({ subjectRef: "cust-7" }));
    expect(code).toBe(status.PERMISSION_DENIED);
    const rows = await t.vault.db.query("SELECT 1 FROM access_log WHERE action = 'delete_subject' AND caller = 'support-desk' AND outcome = 'denied'", []);
    expect(rows.rows).toHaveLength(1);
  });

  describe("signed erasure receipts (§14)", () => {
    let res: DeleteSubjectResponse;
    let statement: ErasureStatement;
    let erasedTokens: string[];
    const file = (name: string, body: unknown) => {
      const f = path.join(dir, name);
      writeFileSync(f, JSON.stringify(body));
      return f;
    };

    beforeAll(async () => {
      const shared = "5555 5555 5555 4444";
      const a = await pay().tokenize({
        fields: [
          { category: "card_number", value: shared },
          { category: "cardholder_name", value: "Receipt Holder" },
        ],
        ttlSeconds: 0,
        subjectRef: "cust-receipt",
      });
      await pay().tokenize({ fields: [{ category: "card_number", value: shared }], ttlSeconds: 0, subjectRef: "cust-other" });
      erasedTokens = [a.tokens[1]!.token];
      res = await pay().deleteSubject({ subjectRef: "cust-receipt" });
      statement = JSON.parse(Buffer.from(res.receipt!.statement).toString("utf8")) as ErasureStatement;
      expect(statement.unlinked_tokens).toEqual([a.tokens[0]!.token]);
    });

    it("names the subject, time, erased and unlinked tokens, in canonical JSON with sorted keys, signed by the log's key", () => {
      expect(res).toMatchObject({ erased: 1, unlinked: 1 });
      expect(statement).toMatchObject({ type: "fieldvault-erasure-receipt-v1", subject_ref: "cust-receipt", erased_by: "payment-service", erased_tokens: erasedTokens });
      expect(Math.abs(Date.parse(statement.time) - Date.now())).toBeLessThan(60_000);
      const text = Buffer.from(res.receipt!.statement).toString("utf8");
      expect(text).not.toMatch(/\s/);
      const keys = Object.keys(JSON.parse(text) as object);
      expect(keys).toEqual([...keys].sort());
      const key = loadSigningKey(DEV_SIGNING_KEY_FILE);
      expect(res.receipt!.keyId).toBe(key.keyId);
      expect(verifyReceipt({ statement: res.receipt!.statement, signature: res.receipt!.signature, keyId: res.receipt!.keyId }, [key.publicKey]).ok).toBe(true);
    });

    it("its access-log sequence points at the erasure entry", async () => {
      const { rows } = await t.vault.db.query<{ action: string; caller: string; token: string; detail: string; chain_id: string; chain_seq: string; request_id: string }>(
        "SELECT action, caller, token, detail, chain_id, chain_seq::text, request_id FROM access_log WHERE seq = $1",
        [statement.access_log.sequence],
      );
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ action: "delete_subject", caller: "payment-service", token: "", chain_id: statement.access_log.chain_id, request_id: statement.access_log.request_id });
      expect(Number(rows[0]!.chain_seq)).toBe(statement.access_log.chain_seq);
      expect(rows[0]!.detail).toContain(`receipt=${statement.receipt_id} `);
      expect(rows[0]!.detail).toContain("erased=1 unlinked=1");
    });

    it("fieldvault audit verify-receipt: valid exits 0; one changed byte in the statement or the signature fails with the reason", async () => {
      const good = grpcurlJson(res);
      const ok = await cli(["audit", "verify-receipt", file("good.json", good)]);
      expect(ok.stderr).toBe("");
      expect(ok.code).toBe(0);
      expect(ok.stdout).toContain("VALID");
      expect(ok.stdout).toContain(`access-log sequence ${statement.access_log.sequence}`);
      // The bare receipt with key_id (snake case) works too.
      expect((await cli(["audit", "verify-receipt", file("bare.json", { ...good.receipt, keyId: undefined, key_id: good.receipt.keyId })])).code).toBe(0);

      const flip = (b64: string, at: number) => {
        const b = Buffer.from(b64, "base64");
        b[at] = b[at]! ^ 0x01;
        return b.toString("base64");
      };
      // A changed byte inside a token id of the statement: still JSON, but the signature no longer covers it.
      const text = Buffer.from(good.receipt.statement, "base64").toString("utf8");
      const inToken = text.indexOf(erasedTokens[0]!) + 5;
      const badStatement = await cli(["audit", "verify-receipt", file("bad-statement.json", { receipt: { ...good.receipt, statement: flip(good.receipt.statement, inToken) } })]);
      expect(badStatement.code).toBe(2);
      expect(badStatement.stderr).toMatch(/INVALID: signature does not verify/);
      const badSignature = await cli(["audit", "verify-receipt", file("bad-signature.json", { receipt: { ...good.receipt, signature: flip(good.receipt.signature, 10) } })]);
      expect(badSignature.code).toBe(2);
      expect(badSignature.stderr).toMatch(/INVALID: signature does not verify/);
      // Another key (--public-key) is not the one that signed.
      const other = signingKeyFromSeed(new Uint8Array(32).fill(9));
      const wrongKey = await cli(["audit", "verify-receipt", "--public-key", Buffer.from(other.publicKey).toString("base64"), file("good2.json", good)]);
      expect(wrongKey.code).toBe(2);
      expect(wrongKey.stderr).toMatch(/no trusted public key has key id/);
      // The right key passed explicitly verifies.
      const pk = Buffer.from(loadSigningKey(DEV_SIGNING_KEY_FILE).publicKey).toString("base64");
      expect((await cli(["audit", "verify-receipt", "--public-key", pk, file("good3.json", good)])).code).toBe(0);
    });
  });

  describe("subject report (§14)", () => {
    let passport: string;
    let phone: string;
    beforeAll(async () => {
      const { tokens } = await book().tokenize({
        fields: [
          { category: "passport_number", value: "B77Y12345" },
          { category: "phone", value: "+84901234567" },
        ],
        ttlSeconds: 0,
        subjectRef: "cust-report",
      });
      [passport, phone] = tokens.map((x) => x.token) as [string, string];
      await book().detokenize({ tokens: [passport], purpose: "customs_declaration", justification: "CUS-1" });
      await tokenApi(t.clients, "support-desk").detokenize({ tokens: [phone], purpose: "customer_support", justification: "SUP-9" });
      await tokenApi(t.clients, "support-desk").detokenize({ tokens: [passport], purpose: "customer_support", justification: "SUP-10" });
    });

    it("lists every linked token (masked, dates) and every log entry about them, newest first, with no plaintext", async () => {
      const r = await report("privacy-officer", { subjectRef: "cust-report" });
      expect(r.subjectRef).toBe("cust-report");
      // Oldest first; tokens of one call share their creation time, so compare them by category.
      expect(r.tokens.map((x) => [x.token, x.category]).sort((a, b) => a[1]!.localeCompare(b[1]!))).toEqual([
        [passport, "passport_number"],
        [phone, "phone"],
      ]);
      expect(r.tokens.find((x) => x.token === passport)!.masked).toBe("•••345");
      expect(r.tokens[0]!.createdAt).toBeInstanceOf(Date);
      expect(r.entries.map((e) => [e.caller, e.action, e.token, e.purpose, e.outcome])).toEqual([
        ["support-desk", "detokenize", passport, "customer_support", "denied"],
        ["support-desk", "detokenize", phone, "customer_support", "allowed"],
        ["booking-service", "detokenize", passport, "customs_declaration", "allowed"],
        // Tokenize entries name the tokens they handed out (issue 10.7): who created each token.
        ["booking-service", "tokenize", phone, "", "ok"],
        ["booking-service", "tokenize", passport, "", "ok"],
      ]);
      const seqs = r.entries.map((e) => e.sequence);
      expect(seqs).toEqual([...seqs].sort((a, b) => b - a));
      const json = JSON.stringify(r);
      expect(json).not.toContain("B77Y12345");
      expect(json).not.toContain("901234567");
      expect(r.nextPageToken).toBe("");
    });

    it("pages the entries; tokens come on the first page only", async () => {
      const p1 = await report("privacy-officer", { subjectRef: "cust-report", pageSize: 3 });
      expect(p1.tokens).toHaveLength(2);
      expect(p1.entries).toHaveLength(3);
      expect(p1.nextPageToken).not.toBe("");
      const p2 = await report("privacy-officer", { subjectRef: "cust-report", pageSize: 3, pageToken: p1.nextPageToken });
      expect(p2.tokens).toEqual([]);
      expect(p2.entries.map((e) => [e.caller, e.action])).toEqual([
        ["booking-service", "tokenize"],
        ["booking-service", "tokenize"],
      ]);
      expect(p2.nextPageToken).toBe("");
      const empty = await codeOf(report("privacy-officer", { subjectRef: "" }));
      expect([empty.code, empty.details]).toEqual([status.INVALID_ARGUMENT, "subject_ref: required"]);
      const huge = await codeOf(report("privacy-officer", { subjectRef: "cust-report", pageSize: 5001 }));
      expect([huge.code, huge.details]).toEqual([status.INVALID_ARGUMENT, "page_size: at most 5000"]);
      const bad = await codeOf(report("privacy-officer", { subjectRef: "cust-report", pageToken: "nope!" }));
      expect(bad.code).toBe(status.INVALID_ARGUMENT);
      expect(bad.details).toContain("page_token");
    });

    it("needs subject_report: a log reader and the data's own caller are refused; refusals and reports are logged with a keyed subject hash", async () => {
      for (const caller of ["ir-analyst", "booking-service"]) {
        const { code } = await codeOf(report(caller, { subjectRef: "cust-report" }));
        expect(code).toBe(status.PERMISSION_DENIED);
      }
      const { rows } = await t.vault.db.query<{ caller: string; outcome: string; detail: string }>(
        "SELECT caller, outcome, detail FROM access_log WHERE action = 'subject_report' ORDER BY seq",
        [],
      );
      expect(rows.filter((r) => r.outcome === "denied").map((r) => r.caller)).toEqual(["ir-analyst", "booking-service"]);
      const ok = rows.filter((r) => r.caller === "privacy-officer" && r.outcome === "ok");
      expect(ok.length).toBeGreaterThanOrEqual(3);
      for (const r of ok) expect(r.detail).toMatch(/^subject=sh_[0-9a-f]{32} /);
      expect(rows.some((r) => r.detail.includes("cust-report"))).toBe(false);
    });

    it("fieldvault audit subject-report prints a table, or JSON with --json", async () => {
      const table = await cli(["audit", "subject-report", "cust-report", ...as("privacy-officer")]);
      expect(table.stderr).toBe("");
      expect(table.code).toBe(0);
      expect(table.stdout).toContain("subject cust-report: 2 token(s) held");
      expect(table.stdout).toMatch(new RegExp(`${passport}\\s+passport_number\\s+•••345`));
      expect(table.stdout).toMatch(/support-desk\s+detokenize/);
      const json = await cli(["audit", "subject-report", "cust-report", "--json", ...as("privacy-officer")]);
      expect(json.code).toBe(0);
      const doc = JSON.parse(json.stdout.trim()) as { tokens: { token: string }[]; entries: { caller: string }[] };
      expect(doc.tokens.map((x) => x.token).sort()).toEqual([passport, phone].sort());
      expect(doc.entries[0]!.caller).toBe("support-desk");
      const refused = await cli(["audit", "subject-report", "cust-report", ...as("ir-analyst")]);
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toContain("may not read subject reports");
    });
  });
});

/** The embedded default (PGlite): same links, receipts and report through the same SQL. */
describe("data-subject rights on the embedded store", () => {
  let t: TestVault;
  beforeAll(async () => {
    await readySodium();
    t = await startTestVault("embedded");
  });
  afterAll(async () => t?.stop());

  it("scopes DeleteSubject to the caller, signs a receipt naming the erasure entry, and reports what is left", async () => {
    const travel = await tokenApi(t.clients, "booking-service").tokenize({ fields: [{ category: "passport_number", value: "E12345678" }], ttlSeconds: 0, subjectRef: "cust-e" });
    await tokenApi(t.clients, "payment-service").tokenize({ fields: [{ category: "cardholder_name", value: "Embedded Holder" }], ttlSeconds: 0, subjectRef: "cust-e" });
    const res = await tokenApi(t.clients, "payment-service").deleteSubject({ subjectRef: "cust-e" });
    expect(res).toMatchObject({ erased: 1, unlinked: 0 });
    const check = verifyReceipt({ statement: res.receipt!.statement, signature: res.receipt!.signature, keyId: res.receipt!.keyId }, [loadSigningKey(DEV_SIGNING_KEY_FILE).publicKey]);
    expect(check.ok).toBe(true);
    const seq = check.ok ? check.statement.access_log.sequence : 0;
    const { rows } = await t.vault.db.query<{ action: string; detail: string }>("SELECT action, detail FROM access_log WHERE seq = $1", [seq]);
    expect(rows[0]!.action).toBe("delete_subject");
    expect(rows[0]!.detail).toContain("erased=1 unlinked=0");
    const r = (await call(t.clients.log, t.clients.log.subjectReport as never, "privacy-officer", { subjectRef: "cust-e", pageSize: 0, pageToken: "" })) as SubjectReportResponse;
    expect(r.tokens.map((x) => x.token)).toEqual([travel.tokens[0]!.token]);
  });
});
