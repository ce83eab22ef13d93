import { FieldVaultClient, RevealError } from "../../src/sdk";
import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { startTestVault, type TestVault } from "../helpers/vault";
import { policyFile } from "../reliability/helpers/policy-file";

const PAN = "4242 4242 4242 4242";
const pay = { purpose: "payment_authorization", justification: "order-42" };

/** The SDK's reveal() never throws away a single-use CVV (real vault, real gRPC). */
describe("SDK reveal() and single-use CVVs", () => {
  let t: TestVault;
  let vault: FieldVaultClient;
  let booking: FieldVaultClient;
  const card = async () => vault.tokenize([{ category: "card_number", value: PAN }, { category: "card_cvv", value: "737" }]);
  const rejection = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      expect(err).toBeInstanceOf(RevealError);
      return err as RevealError;
    }
    throw new Error("expected reveal to throw");
  };

  beforeAll(async () => {
    t = await startTestVault("embedded");
    vault = new FieldVaultClient({ address: t.vault.address, caller: "payment-service" });
    booking = new FieldVaultClient({ address: t.vault.address, caller: "booking-service" });
  });
  afterAll(async () => {
    vault?.close();
    booking?.close();
    await t?.stop();
  });

  it("a typo next to a CVV fails the reveal and leaves the CVV unused", async () => {
    const [pan, cvv] = await card();
    const err = await rejection(vault.reveal([pan!.token, cvv!.token, "tok_typo"], pay));
    expect(err.message).toContain("item 2: INVALID_ARGUMENT");
    expect(err.message).not.toContain("737");
    expect(await vault.reveal([cvv!.token], pay)).toEqual(["737"]);
  });

  it("an unknown (well-formed) token next to a CVV leaves the CVV unused", async () => {
    const [pan, cvv] = await card();
    const unknown = "tok_" + "0".repeat(22);
    const err = await rejection(vault.reveal([pan!.token, cvv!.token, unknown], pay));
    expect(err.codeName).toBe("NOT_FOUND");
    expect(err.results.map((r) => r.ok)).toEqual([false, false, false]);
    expect(await vault.reveal([cvv!.token], pay)).toEqual(["737"]);
  });

  it("a refused item: the CVV is revealed last, and is untouched when anything else fails", async () => {
    const [pan, cvv] = await card();
    // refund allows the card number; the reveal of the PAN passes, the CVV (payment_authorization only) is refused.
    const err = await rejection(vault.reveal([pan!.token, cvv!.token], { purpose: "refund" }));
    expect(err.results[0]).toMatchObject({ ok: true, value: "4242424242424242" });
    expect(err.results[1]).toMatchObject({ ok: false, code: "PERMISSION_DENIED" });
    // A token this caller may not even inspect (another service's email) goes first, so the CVV is untouched.
    const [email] = await booking.tokenize([{ category: "email", value: "someone@example.com" }]);
    const err2 = await rejection(vault.reveal([cvv!.token, email!.token], pay));
    expect(err2.results[1]).toMatchObject({ ok: false, code: "PERMISSION_DENIED" });
    expect(err2.results[0]).toMatchObject({ ok: false, code: "ABORTED" });
    expect(await vault.reveal([cvv!.token], pay)).toEqual(["737"]);
  });

  it("returns every value in request order when all succeed, the CVV once", async () => {
    const [pan, cvv] = await card();
    expect(await vault.reveal([cvv!.token, pan!.token], pay)).toEqual(["737", "4242424242424242"]);
    const again = await rejection(vault.reveal([cvv!.token], pay));
    expect(again.codeName).toBe("NOT_FOUND");
  });
});

describe("SDK connection errors a person can read", () => {
  it("says nothing is listening, with the fix, instead of grpc-js's resolution note", async () => {
    const c = new FieldVaultClient({ address: "127.0.0.1:1", caller: "payment-service", deadlineMs: 3000 });
    try {
      await expect(c.listKeys()).rejects.toThrow("ListKeys: UNAVAILABLE: nothing is listening on 127.0.0.1:1 (connection refused): is the vault running (npm start)? Otherwise fix the address option");
    } finally {
      c.close();
    }
  });
});

describe("SDK reveal() over the caller's rate budget", () => {
  let t: TestVault;
  let policy: string;
  beforeAll(async () => {
    policy = policyFile((d) => (d.callers["payment-service"]!.detokenize_per_minute = 1));
    t = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: policy });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    rmSync(dirname(policy), { recursive: true, force: true });
  });

  it("the refused item says when the budget comes back (retryAfterMs); the allowed one is revealed", async () => {
    const vault = new FieldVaultClient({ address: t.vault.address, caller: "payment-service" });
    try {
      const names = await vault.tokenize([{ category: "cardholder_name", value: "Budget One" }, { category: "cardholder_name", value: "Budget Two" }]);
      const err = (await vault.reveal(names.map((n) => n.token), pay).then(() => undefined, (e: unknown) => e)) as RevealError;
      expect(err).toBeInstanceOf(RevealError);
      expect(err.results[0]).toMatchObject({ ok: true, value: "Budget One" });
      expect(err.results[1]).toMatchObject({ ok: false, code: "RESOURCE_EXHAUSTED" });
      const after = (err.results[1] as { retryAfterMs?: number }).retryAfterMs;
      expect(after).toBeGreaterThan(0);
      expect(after).toBeLessThanOrEqual(60_000);
    } finally {
      vault.close();
    }
  });
});
