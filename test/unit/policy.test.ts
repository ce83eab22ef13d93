import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import YAML from "yaml";
import { fromRoot } from "../../src/config/paths";
import { defaultRegistry } from "../../src/domain/categories";
import { Policy, PolicyError, type PolicyDocument } from "../../src/domain/policy";
import { PolicyHolder } from "../../src/services/policy-holder";

const CATEGORIES = defaultRegistry().names();
const DEFAULT_FILE = fromRoot("policy", "default.yaml");
/** A fresh, mutable copy of the default policy document as parsed from YAML. */
const defaultDoc = (): PolicyDocument & Record<string, unknown> => YAML.parse(readFileSync(DEFAULT_FILE, "utf8"));

/** The problems a document is refused with (fails the test if it is accepted). */
function problemsOf(doc: unknown): string[] {
  try {
    Policy.from(doc, CATEGORIES);
  } catch (err) {
    expect(err).toBeInstanceOf(PolicyError);
    return (err as PolicyError).problems;
  }
  throw new Error("expected the policy to be refused");
}

describe("Policy validation", () => {
  it("accepts the default policy file", () => {
    const p = Policy.fromFile(DEFAULT_FILE, CATEGORIES);
    expect(p.callerName("spiffe://ego/support-desk")).toBe("support-desk");
    expect(p.canReadLog("spiffe://ego/ir-analyst")).toBe(true);
    expect(p.isKeyAdmin("sec-admin-2")).toBe(true);
  });

  it("names an unknown category in detokenize, tokenize, inspect and delete", () => {
    const doc = defaultDoc();
    doc.callers["support-desk"]!.detokenize.credit_score = ["customer_support"];
    doc.callers["payment-service"]!.tokenize.push("iban");
    doc.callers["booking-service"]!.inspect.push("loyalty_id");
    doc.callers["booking-service"]!.delete.push("seat");
    expect(problemsOf(doc)).toEqual(
      expect.arrayContaining([
        'callers.support-desk.detokenize: unknown category "credit_score"',
        'callers.payment-service.tokenize: unknown category "iban"',
        'callers.booking-service.inspect: unknown category "loyalty_id"',
        'callers.booking-service.delete: unknown category "seat"',
      ]),
    );
  });

  it("names a purpose that is not declared", () => {
    const doc = defaultDoc();
    doc.callers["booking-service"]!.detokenize.email = ["booking_fulfillment", "upsell"];
    expect(problemsOf(doc)).toEqual(['callers.booking-service.detokenize.email: undeclared purpose "upsell"']);
  });

  it("refuses any grant for marketing, naming the entry", () => {
    const doc = defaultDoc();
    doc.callers["payment-service"]!.detokenize.card_number = ["payment_authorization", "marketing"];
    expect(problemsOf(doc)).toEqual(['callers.payment-service.detokenize.card_number: purpose "marketing" may reveal nothing']);
  });

  it("refuses an identity that may both detokenize and read the log, unless explicitly allowed", () => {
    const doc = defaultDoc();
    doc.callers["ir-analyst"]!.detokenize = { email: ["fraud_investigation"] };
    const problems = problemsOf(doc);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^callers\.ir-analyst: may not both detokenize and read the access log/);
    doc.allow_detokenize_and_log_read = true;
    expect(Policy.from(doc, CATEGORIES).canDetokenize("ir-analyst", "email", "fraud_investigation")).toBe(true);
  });

  it("names a misspelt field, a duplicate identity and an undeclared never_reveal_for purpose", () => {
    const doc = defaultDoc() as Record<string, unknown> & { callers: Record<string, Record<string, unknown>> };
    doc.callers["support-desk"]!.detokenise = { phone: ["customer_support"] };
    expect(problemsOf(doc).join("\n")).toMatch(/callers\.support-desk/);

    const dup = defaultDoc();
    dup.callers["sec-admin-2"]!.identities = ["spiffe://ego/sec-admin-1"];
    expect(problemsOf(dup)).toEqual(['callers.sec-admin-2.identities: "spiffe://ego/sec-admin-1" is already used by callers.sec-admin-1']);

    const never = defaultDoc();
    never.never_reveal_for = ["marketing", "profiling"];
    expect(problemsOf(never)).toEqual(['never_reveal_for: undeclared purpose "profiling"']);
  });

  it("reports every problem at once", () => {
    const doc = defaultDoc();
    doc.callers["support-desk"]!.detokenize.phone = ["marketing"];
    doc.callers["support-desk"]!.detokenize.passport = ["customer_support"];
    expect(problemsOf(doc)).toHaveLength(2);
  });
});

describe("PolicyHolder reload (SIGHUP)", () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), "fv-policy-"));
    file = path.join(dir, "policy.yaml");
    writeFileSync(file, readFileSync(DEFAULT_FILE));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("keeps the old policy in force when the new file is invalid, and says why", () => {
    const holder = new PolicyHolder(file, CATEGORIES);
    const before = holder.get();
    const doc = defaultDoc();
    doc.callers["support-desk"]!.detokenize.address = ["marketing"];
    writeFileSync(file, YAML.stringify(doc));
    expect(holder.reload()).toEqual(['callers.support-desk.detokenize.address: purpose "marketing" may reveal nothing']);
    expect(holder.get()).toBe(before);
    expect(holder.get().canDetokenize("support-desk", "address", "marketing")).toBe(false);
    expect(holder.get().canDetokenize("support-desk", "phone", "customer_support")).toBe(true);
  });

  it("keeps the old policy when the file is not YAML at all, or is gone", () => {
    const holder = new PolicyHolder(file, CATEGORIES);
    const before = holder.get();
    writeFileSync(file, "callers: [unclosed\n");
    expect(holder.reload()?.[0]).toMatch(/^policy\.yaml: /);
    expect(holder.get()).toBe(before);
    rmSync(file);
    expect(holder.reload()?.[0]).toMatch(/^policy\.yaml: /);
    expect(holder.get()).toBe(before);
  });

  it("swaps in a valid new file", () => {
    const holder = new PolicyHolder(file, CATEGORIES);
    const doc = defaultDoc();
    doc.callers["support-desk"]!.detokenize.address = ["customer_support"];
    writeFileSync(file, YAML.stringify(doc));
    expect(holder.reload()).toBeUndefined();
    expect(holder.get().canDetokenize("support-desk", "address", "customer_support")).toBe(true);
  });

  it("refuses to start on an invalid file", () => {
    writeFileSync(file, YAML.stringify({ ...defaultDoc(), purposes: {} }));
    expect(() => new PolicyHolder(file, CATEGORIES)).toThrow(PolicyError);
  });
});
