import { readFileSync } from "node:fs";
import YAML from "yaml";
import { ConfigError, loadConfig } from "../../src/config/config";
import { fromRoot } from "../../src/config/paths";
import { signingKeyFromSeed } from "../../src/crypto/signing";
import { readySodium } from "../../src/crypto/sodium";
import { defaultRegistry } from "../../src/domain/categories";
import { canonicalJson, signReceipt, verifyReceipt } from "../../src/domain/erasure-receipt";
import { Policy, PolicyError } from "../../src/domain/policy";

const CATEGORIES = defaultRegistry().names();
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const defaultDoc = (): any => YAML.parse(readFileSync(fromRoot("policy", "default.yaml"), "utf8"));

function problemsOf(doc: unknown): string[] {
  try {
    Policy.from(doc, CATEGORIES);
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return (err as PolicyError).problems;
  }
  throw new Error("expected the policy to be refused");
}

describe("policy: subject_report, approve_break_glass and break_glass (DESIGN §14–§15)", () => {
  const p = Policy.from(defaultDoc(), CATEGORIES);

  it("the development policy: privacy-officer reports, fraud-analyst requests card_number and cardholder_name for fraud_investigation, security-lead approves", () => {
    expect(p.canSubjectReport("spiffe://ego/privacy-officer")).toBe(true);
    expect(p.canSubjectReport("ir-analyst")).toBe(false);
    expect(p.breakGlassRule("fraud-analyst")).toEqual({ categories: ["card_number", "cardholder_name"], purposes: ["fraud_investigation"], approvers: ["security-lead"] });
    expect(p.breakGlassRule("payment-service")).toBeUndefined();
    expect(p.canApproveBreakGlass("spiffe://ego/security-lead", "fraud-analyst")).toBe(true);
    expect(p.canApproveBreakGlass("sec-admin-1", "fraud-analyst")).toBe(false);
    expect(p.canApproveBreakGlass("security-lead", "payment-service")).toBe(false);
    expect(p.canDetokenize("fraud-analyst", "card_number", "fraud_investigation")).toBe(false);
  });

  it("refuses break_glass rules naming unknown callers, categories or purposes, marketing, self-approval, or approvers without approve_break_glass", () => {
    const doc = defaultDoc();
    doc.break_glass = {
      ghost: { categories: ["card_number"], purposes: ["fraud_investigation"], approvers: ["security-lead"] },
      "fraud-analyst": { categories: ["card_pin"], purposes: ["marketing", "snooping"], approvers: ["fraud-analyst", "sec-admin-1"] },
    };
    expect(problemsOf(doc)).toEqual([
      'break_glass.ghost: unknown caller "ghost"',
      'break_glass.fraud-analyst.categories: unknown category "card_pin"',
      'break_glass.fraud-analyst.purposes: purpose "marketing" may reveal nothing',
      'break_glass.fraud-analyst.purposes: undeclared purpose "snooping"',
      "break_glass.fraud-analyst.approvers: a caller may not approve its own requests",
      'break_glass.fraud-analyst.approvers: "sec-admin-1" is not a caller with approve_break_glass',
    ]);
  });

  it("treats subject_report as reading the log: not together with detokenize grants", () => {
    const doc = defaultDoc();
    doc.callers["support-desk"].subject_report = true;
    expect(problemsOf(doc)).toEqual(["callers.support-desk: may not both detokenize and read the access log (set allow_detokenize_and_log_read to allow)"]);
  });
});

describe("erasure receipts", () => {
  beforeAll(readySodium);
  const key = () => signingKeyFromSeed(new Uint8Array(32).fill(3));
  const statement = {
    receipt_id: "er_1",
    subject_ref: "cust-ü",
    time: "2026-12-03T08:00:00.000Z",
    erased_by: "payment-service",
    categories: ["card_number"],
    erased_tokens: ["4111110000001234", "tok_a"],
    unlinked_tokens: [],
    access_log: { sequence: 7, chain_id: "c", chain_seq: 3, request_id: "req_x" },
  };

  it("canonical JSON sorts keys at every level, without whitespace, UTF-8", () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: "é" }], c: null } })).toBe('{"a":{"c":null,"d":[2,{"y":"é","z":1}]},"b":1}');
    const r = signReceipt(key(), statement);
    expect(new TextDecoder().decode(r.statement)).toBe(canonicalJson(JSON.parse(new TextDecoder().decode(r.statement))));
  });

  it("verifies, and names what is wrong otherwise", () => {
    const k = key();
    const r = signReceipt(k, statement);
    expect(verifyReceipt(r, [k.publicKey])).toMatchObject({ ok: true, statement: { subject_ref: "cust-ü", key_id: k.keyId } });
    const reason = (x: Parameters<typeof verifyReceipt>[0], keys = [k.publicKey]) => {
      const c = verifyReceipt(x, keys);
      return c.ok ? "ok" : c.reason;
    };
    expect(reason({ ...r, signature: r.signature.slice(0, 63) })).toMatch(/64/);
    expect(reason({ ...r, statement: new Uint8Array([0xff, 0xfe]) })).toMatch(/not UTF-8 JSON/);
    expect(reason({ ...r, keyId: "sk_other" })).toMatch(/differs from the key id inside the statement/);
    expect(reason(r, [signingKeyFromSeed(new Uint8Array(32).fill(4)).publicKey])).toMatch(/no trusted public key has key id/);
    const tampered = new Uint8Array(r.statement);
    tampered[tampered.indexOf(0x37 /* "7" of the sequence */)] = 0x38;
    expect(reason({ ...r, statement: tampered })).toMatch(/signature does not verify/);
    // A checkpoint-style signed message is not a receipt.
    const other = signReceipt(k, statement);
    const array = new TextEncoder().encode(JSON.stringify(["fieldvault-checkpoint-v1"]));
    expect(reason({ ...other, statement: array })).toMatch(/not a fieldvault-erasure-receipt-v1/);
  });
});

describe("FIELDVAULT_BREAK_GLASS_MAX_SECONDS", () => {
  it("defaults to 3600 and accepts 1..86400, naming the variable otherwise", () => {
    expect(loadConfig({}).breakGlassMaxSeconds).toBe(3600);
    expect(loadConfig({ FIELDVAULT_BREAK_GLASS_MAX_SECONDS: "900" }).breakGlassMaxSeconds).toBe(900);
    for (const bad of ["0", "86401", "soon"]) {
      expect(() => loadConfig({ FIELDVAULT_BREAK_GLASS_MAX_SECONDS: bad })).toThrow(ConfigError);
      expect(() => loadConfig({ FIELDVAULT_BREAK_GLASS_MAX_SECONDS: bad })).toThrow(/FIELDVAULT_BREAK_GLASS_MAX_SECONDS/);
    }
  });
});
