import { status } from "@grpc/grpc-js";
import { KeyState } from "../../src/gen/fieldvault/v1/key_admin";
import { codeOf, tokenApi } from "../helpers/client";
import { keyApi } from "../helpers/key-admin";
import { BACKENDS, startTestVault, type TestVault } from "../helpers/vault";

const nextYear = new Date().getUTCFullYear() + 1;
const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix} ${String(i).padStart(5, "0")}`);

describe.each(BACKENDS)("KeyAdmin on %s", (backend) => {
  let t: TestVault;
  const admin1 = () => keyApi(t.clients, "sec-admin-1");
  const admin2 = () => keyApi(t.clients, "sec-admin-2");
  const pay = () => tokenApi(t.clients, "payment-service");
  const book = () => tokenApi(t.clients, "booking-service");
  const sql = async <R = Record<string, unknown>>(text: string, params: unknown[] = []) => (await t.vault.db.query<R>(text, params)).rows;
  const countUnder = async (category: string, version: number) =>
    (await sql<{ n: number }>("SELECT count(*)::int AS n FROM tokens WHERE category = $1 AND kek_version = $2", [category, version]))[0]!.n;
  const logRows = (where: string, params: unknown[]) =>
    sql<{ caller: string; action: string; outcome: string; category: string; detail: string }>(
      `SELECT caller, action, outcome, category, detail FROM access_log WHERE ${where} ORDER BY seq`,
      params,
    );
  const tokenize = async (api: ReturnType<typeof tokenApi>, category: string, values: string[]) =>
    (await api.tokenize({ fields: values.map((value) => ({ category, value })), ttlSeconds: 0, subjectRef: "" })).tokens.map((x) => x.token);
  const reveal = async (api: ReturnType<typeof tokenApi>, tokens: string[], purpose: string) =>
    (await api.detokenize({ tokens, purpose, justification: "KEY-TEST" })).results;

  beforeAll(async () => {
    t = await startTestVault(backend);
  });
  afterAll(async () => {
    await t?.stop();
  });

  describe("happy", () => {
    it("lists every category with v1 active, its age, cryptoperiod and the tokens under it", async () => {
      await tokenize(pay(), "cardholder_name", ["List Check One", "List Check Two", "List Check Three"]);
      const all = await admin1().list();
      expect(all.categories.map((c) => c.category)).toEqual(expect.arrayContaining(["card_number", "card_cvv", "passport_number", "email"]));
      for (const c of all.categories) {
        expect(c.activeVersion).toBe(1);
        expect(c.cryptoperiodSeconds).toBe(365 * 86400);
        expect(c.versions).toEqual([expect.objectContaining({ version: 1, state: KeyState.KEY_STATE_ACTIVE, pastCryptoperiod: false })]);
        expect(c.versions[0]!.createdAt).toBeInstanceOf(Date);
      }
      const one = await admin1().list("cardholder_name");
      expect(one.categories).toHaveLength(1);
      expect(one.categories[0]!.versions[0]!.tokens).toBe(3);
    });

    it("after a rotation new tokens use v2 and old tokens still detokenize", async () => {
      const value = `07/${nextYear}`;
      const [old] = await tokenize(pay(), "card_expiry", [value]);
      const r = await admin1().rotate("card_expiry");
      expect(r).toEqual({ category: "card_expiry", activeVersion: 2 });
      const [fresh] = await tokenize(pay(), "card_expiry", [value]);
      const inspected = await pay().inspect({ tokens: [old!, fresh!] });
      expect(inspected.tokens.map((x) => x.keyVersion)).toEqual([1, 2]);
      const results = await reveal(pay(), [old!, fresh!], "refund");
      expect(results.map((x) => x.outcome)).toEqual([
        { $case: "value", value: `07/${nextYear}` },
        { $case: "value", value: `07/${nextYear}` },
      ]);
      const listed = (await admin1().list("card_expiry")).categories[0]!;
      expect(listed.activeVersion).toBe(2);
      expect(listed.versions.map((v) => [v.version, v.state, v.tokens])).toEqual([
        [1, KeyState.KEY_STATE_DECRYPT_ONLY, 1],
        [2, KeyState.KEY_STATE_ACTIVE, 1],
      ]);
      // Rotation never deletes: v1's key material is still stored.
      expect(await sql("SELECT 1 FROM kek_versions WHERE category = 'card_expiry' AND version = 1 AND wrapped_key IS NOT NULL")).toHaveLength(1);
    });

    it("rewrap moves every DEK onto the active version, leaves the value ciphertext byte-for-byte, and logs each batch", async () => {
      const values = names("Rewrap Person", 300);
      const tokens = await tokenize(pay(), "cardholder_name", values);
      const before = new Map(
        (await sql<{ id: string; ciphertext: Buffer }>("SELECT id, ciphertext FROM tokens WHERE category = 'cardholder_name'")).map((r) => [r.id, Buffer.from(r.ciphertext).toString("hex")]),
      );
      const under1 = await countUnder("cardholder_name", 1);
      expect(under1).toBe(303);
      await admin1().rotate("cardholder_name");
      const run = await admin1().rewrap({ category: "cardholder_name", batchSize: 64 });
      expect(run.code).toBe(status.OK);
      expect(run.messages.length).toBeGreaterThanOrEqual(5);
      const last = run.messages[run.messages.length - 1]!;
      expect(last).toEqual({ done: under1, remaining: 0 });
      for (let i = 1; i < run.messages.length; i++) expect(run.messages[i]!.done).toBeGreaterThanOrEqual(run.messages[i - 1]!.done);
      expect(await countUnder("cardholder_name", 1)).toBe(0);
      expect(await countUnder("cardholder_name", 2)).toBe(under1);
      const after = await sql<{ id: string; ciphertext: Buffer }>("SELECT id, ciphertext FROM tokens WHERE category = 'cardholder_name'");
      expect(after).toHaveLength(before.size);
      for (const r of after) expect(Buffer.from(r.ciphertext).toString("hex")).toBe(before.get(r.id));
      const results = await reveal(pay(), tokens, "refund");
      expect(results.map((x) => (x.outcome?.$case === "value" ? x.outcome.value : x.outcome?.value.code))).toEqual(values);
      const batches = await logRows("action = 'key_rewrap_batch' AND category = 'cardholder_name'", []);
      expect(batches.every((b) => b.caller === "sec-admin-1")).toBe(true);
      expect(batches.reduce((n, b) => n + Number(/rewrapped=(\d+)/.exec(b.detail)![1]), 0)).toBe(under1);
      const summary = await logRows("action = 'key_rewrap' AND category = 'cardholder_name'", []);
      expect(summary).toEqual([expect.objectContaining({ caller: "sec-admin-1", outcome: "ok", detail: expect.stringContaining(`rewrapped=${under1} remaining=0`) })]);
      // A second run finds nothing to do.
      const again = await admin2().rewrap({ category: "cardholder_name", batchSize: 0 });
      expect(again.messages).toEqual([{ done: 0, remaining: 0 }]);
    });

    it("a disabled version refuses detokenize per item with FAILED_PRECONDITION; re-enabled, it works again", async () => {
      const [v1Token] = (await sql<{ id: string }>("SELECT id FROM tokens WHERE category = 'card_expiry' AND kek_version = 1")).map((r) => r.id);
      const [v2Token] = (await sql<{ id: string }>("SELECT id FROM tokens WHERE category = 'card_expiry' AND kek_version = 2")).map((r) => r.id);
      const off = await admin1().setState("card_expiry", 1, KeyState.KEY_STATE_DISABLED);
      expect(off).toEqual({ category: "card_expiry", version: 1, state: KeyState.KEY_STATE_DISABLED });
      const refused = await reveal(pay(), [v1Token!, v2Token!], "refund");
      expect(refused[0]!.outcome).toEqual({ $case: "error", value: { code: "FAILED_PRECONDITION", message: expect.stringContaining("disabled"), retryAfterMs: 0 } });
      expect(refused[1]!.outcome).toEqual({ $case: "value", value: `07/${nextYear}` });
      // Rewrap leaves a disabled version alone.
      const run = await admin1().rewrap({ category: "card_expiry", batchSize: 10 });
      expect(run.messages[run.messages.length - 1]).toEqual({ done: 0, remaining: 0 });
      expect(await countUnder("card_expiry", 1)).toBe(1);
      const on = await admin2().setState("card_expiry", 1, KeyState.KEY_STATE_DECRYPT_ONLY);
      expect(on.state).toBe(KeyState.KEY_STATE_DECRYPT_ONLY);
      const ok = await reveal(pay(), [v1Token!], "refund");
      expect(ok[0]!.outcome).toEqual({ $case: "value", value: `07/${nextYear}` });
      const states = await logRows("action = 'key_state' AND category = 'card_expiry'", []);
      expect(states.map((s) => [s.caller, s.detail])).toEqual([
        ["sec-admin-1", "version=v1 state=decrypt_only->disabled"],
        ["sec-admin-2", "version=v1 state=disabled->decrypt_only"],
      ]);
    });

    it("destroy: refused while tokens remain; needs a second administrator; a crypto-shred makes those values unrecoverable", async () => {
      const docs = ["DOC-SHRED-1", "DOC-SHRED-2", "DOC-SHRED-3", "DOC-SHRED-4", "DOC-SHRED-5"];
      const tokens = await tokenize(book(), "identity_document", docs);
      await admin1().rotate("identity_document");
      const [survivor] = await tokenize(book(), "identity_document", ["DOC-AFTER-ROTATION"]);

      const remain = await codeOf(admin1().destroy({ category: "identity_document", version: 1 }));
      expect(remain.code).toBe(status.FAILED_PRECONDITION);
      expect(remain.details).toMatch(/5 token\(s\) .* still wrapped under version 1.*rewrap.*crypto_shred/);
      const active = await codeOf(admin1().destroy({ category: "identity_document", version: 2, cryptoShred: true }));
      expect(active.code).toBe(status.FAILED_PRECONDITION);
      expect(active.details).toContain("active version");

      const req = await admin1().destroy({ category: "identity_document", version: 1, cryptoShred: true });
      expect(req.status).toBe("PENDING_APPROVAL");
      expect(req.approvalId).toMatch(/^dr_/);
      // Filing a request changes nothing yet.
      expect((await reveal(book(), [tokens[0]!], "customs_declaration"))[0]!.outcome).toEqual({ $case: "value", value: "DOC-SHRED-1" });

      const self = await codeOf(admin1().destroy({ category: "identity_document", version: 1, cryptoShred: true, approvalId: req.approvalId }));
      expect(self.code).toBe(status.PERMISSION_DENIED);
      expect(self.details).toContain("second key administrator");
      const mismatch = await codeOf(admin2().destroy({ category: "identity_document", version: 1, cryptoShred: false, approvalId: req.approvalId }));
      expect(mismatch.code).toBe(status.INVALID_ARGUMENT);
      const unknown = await codeOf(admin2().destroy({ category: "identity_document", version: 1, cryptoShred: true, approvalId: "dr_doesnotexist" }));
      expect(unknown.code).toBe(status.NOT_FOUND);
      expect(await sql("SELECT 1 FROM kek_versions WHERE category = 'identity_document' AND version = 1 AND state = 'decrypt_only'")).toHaveLength(1);

      const done = await admin2().destroy({ category: "identity_document", version: 1, cryptoShred: true, approvalId: req.approvalId });
      expect(done).toEqual({ status: "DESTROYED", approvalId: req.approvalId, tokensShredded: 5 });
      const row = (await sql<{ state: string; wrapped_key: Buffer | null }>(
        "SELECT state, wrapped_key FROM kek_versions WHERE category = 'identity_document' AND version = 1",
      ))[0]!;
      expect(row).toEqual({ state: "destroyed", wrapped_key: null });

      const after = await reveal(book(), [...tokens, survivor!], "customs_declaration");
      for (const r of after.slice(0, 5)) {
        expect(r.outcome).toEqual({ $case: "error", value: { code: "FAILED_PRECONDITION", message: expect.stringContaining("destroyed; the value is unrecoverable"), retryAfterMs: 0 } });
      }
      expect(after[5]!.outcome).toEqual({ $case: "value", value: "DOC-AFTER-ROTATION" });

      // Destroyed is final.
      expect((await codeOf(admin1().setState("identity_document", 1, KeyState.KEY_STATE_DECRYPT_ONLY))).code).toBe(status.FAILED_PRECONDITION);
      expect((await codeOf(admin2().destroy({ category: "identity_document", version: 1, cryptoShred: true, approvalId: req.approvalId }))).code).toBe(
        status.FAILED_PRECONDITION,
      );
      expect((await admin1().list("identity_document")).categories[0]!.versions[0]).toMatchObject({ state: KeyState.KEY_STATE_DESTROYED, tokens: 5 });

      const trail = await logRows("action IN ('key_destroy_request', 'key_destroy') AND category = 'identity_document'", []);
      expect(trail.map((e) => [e.action, e.caller, e.outcome])).toEqual([
        ["key_destroy_request", "sec-admin-1", "failed_precondition"],
        ["key_destroy_request", "sec-admin-1", "failed_precondition"],
        ["key_destroy_request", "sec-admin-1", "pending_approval"],
        ["key_destroy", "sec-admin-1", "denied"],
        ["key_destroy", "sec-admin-2", "invalid_argument"],
        ["key_destroy", "sec-admin-2", "not_found"],
        ["key_destroy", "sec-admin-2", "destroyed"],
        ["key_destroy", "sec-admin-2", "failed_precondition"],
      ]);
      expect(trail[6]!.detail).toContain("requested_by=sec-admin-1");
    });

    it("after a rewrap the old version can be destroyed without shredding anything", async () => {
      const tokens = await tokenize(book(), "date_of_birth", ["1970-01-02", "1980-05-06"]);
      await admin2().rotate("date_of_birth");
      await admin2().rewrap({ category: "date_of_birth", batchSize: 1 });
      const req = await admin2().destroy({ category: "date_of_birth", version: 1 });
      const done = await admin1().destroy({ category: "date_of_birth", version: 1, approvalId: req.approvalId });
      expect(done.tokensShredded).toBe(0);
      const results = await reveal(book(), tokens, "airline_manifest");
      expect(results.map((r) => r.outcome)).toEqual([
        { $case: "value", value: "1970-01-02" },
        { $case: "value", value: "1980-05-06" },
      ]);
    });

    it("flags an active version past its cryptoperiod", async () => {
      await sql("UPDATE kek_versions SET created_at = now() - interval '400 days' WHERE category = 'email'");
      const email = (await admin1().list("email")).categories[0]!;
      expect(email.versions[0]).toMatchObject({ state: KeyState.KEY_STATE_ACTIVE, pastCryptoperiod: true });
      expect(email.versions[0]!.ageSeconds).toBeGreaterThan(399 * 86400);
      const phone = (await admin1().list("phone")).categories[0]!;
      expect(phone.versions[0]!.pastCryptoperiod).toBe(false);
      await admin1().rotate("email");
      const rotated = (await admin1().list("email")).categories[0]!;
      expect(rotated.versions.map((v) => v.pastCryptoperiod)).toEqual([false, false]);
      const listed = await logRows("action = 'key_list' AND category = 'email'", []);
      expect(listed[0]!.detail).toContain("past_cryptoperiod=email");
    });
  });

  describe("error", () => {
    it("rejects unknown categories, bad versions and states with INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION", async () => {
      expect((await codeOf(admin1().rotate("shoe_size"))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().rotate(""))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().list("shoe_size"))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().setState("phone", 1, KeyState.KEY_STATE_ACTIVE))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().setState("phone", 1, KeyState.KEY_STATE_DESTROYED))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().setState("phone", 1, KeyState.KEY_STATE_UNSPECIFIED))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().setState("phone", 0, KeyState.KEY_STATE_DISABLED))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().setState("phone", 99, KeyState.KEY_STATE_DISABLED))).code).toBe(status.NOT_FOUND);
      const active = await codeOf(admin1().setState("phone", 1, KeyState.KEY_STATE_DISABLED));
      expect(active.code).toBe(status.FAILED_PRECONDITION);
      expect(active.details).toContain("active version");
      expect((await codeOf(admin1().rewrap({ category: "phone", batchSize: 1_000_000 }))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().rewrap({ category: "", batchSize: 0 }))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().destroy({ category: "phone", version: 1, approvalId: "not an id" }))).code).toBe(status.INVALID_ARGUMENT);
      expect((await codeOf(admin1().destroy({ category: "phone", version: 7 }))).code).toBe(status.NOT_FOUND);
      expect((await codeOf(admin1().rotateRoot(""))).code).toBe(status.INVALID_ARGUMENT);
      const root = await codeOf(admin1().rotateRoot("rk_0000000000000000"));
      expect(root.code).toBe(status.FAILED_PRECONDITION);
      expect(root.details).toContain("not loaded by the key provider");
      // Nothing changed.
      expect((await admin1().list("phone")).categories[0]!.versions).toEqual([expect.objectContaining({ version: 1, state: KeyState.KEY_STATE_ACTIVE })]);
    });

    it("a card_cvv version is not destroyed within the hour its CVVs may still live, unless crypto-shredding", async () => {
      await admin1().rotate("card_cvv");
      const early = await codeOf(admin1().destroy({ category: "card_cvv", version: 1 }));
      expect(early.code).toBe(status.FAILED_PRECONDITION);
      expect(early.details).toContain("Redis");
    });
  });

  describe("security", () => {
    const rpcs = (api: ReturnType<typeof keyApi>) => ({
      ListKeys: () => api.list(),
      RotateKey: () => api.rotate("address"),
      Rewrap: () => api.rewrap({ category: "address", batchSize: 0 }),
      SetKeyVersionState: () => api.setState("address", 1, KeyState.KEY_STATE_DISABLED),
      DestroyKeyVersion: () => api.destroy({ category: "address", version: 1, cryptoShred: true }),
      RotateRootKey: () => api.rotateRoot("rk_0000000000000000"),
    });

    it.each(["payment-service", "ir-analyst", "booking-service", "someone-unknown"])("every RPC refuses %s with PERMISSION_DENIED, and logs it", async (caller) => {
      const before = (await sql<{ n: number }>("SELECT count(*)::int AS n FROM access_log WHERE caller = $1 AND outcome = 'denied'", [caller]))[0]!.n;
      for (const [name, fn] of Object.entries(rpcs(keyApi(t.clients, caller)))) {
        const e = await codeOf(fn());
        expect([name, e.code]).toEqual([name, status.PERMISSION_DENIED]);
      }
      const denied = await logRows("caller = $1 AND outcome = 'denied' AND action LIKE 'key_%' OR caller = $1 AND action = 'root_rotate'", [caller]);
      expect(denied.length - before).toBeGreaterThanOrEqual(6);
      expect(new Set(denied.map((d) => d.action))).toEqual(
        new Set(["key_list", "key_rotate", "key_rewrap", "key_state", "key_destroy_request", "root_rotate"]),
      );
      expect((await admin1().list("address")).categories[0]!.versions).toHaveLength(1);
    });

    it("every RPC refuses a caller with no identity (UNAUTHENTICATED)", async () => {
      for (const fn of Object.values(rpcs(keyApi(t.clients, undefined)))) expect((await codeOf(fn())).code).toBe(status.UNAUTHENTICATED);
    });

    it("logs who made each admin call and what it changed", async () => {
      const rows = await logRows("caller IN ('sec-admin-1', 'sec-admin-2') AND outcome IN ('ok', 'pending_approval', 'destroyed')", []);
      const actions = new Set(rows.map((r) => r.action));
      for (const a of ["key_list", "key_rotate", "key_rewrap", "key_rewrap_batch", "key_state", "key_destroy_request", "key_destroy"]) expect(actions).toContain(a);
      const rotation = rows.find((r) => r.action === "key_rotate" && r.category === "card_expiry")!;
      expect(rotation).toMatchObject({ caller: "sec-admin-1", detail: "active=v2 previous=v1 previous_state=decrypt_only" });
    });
  });
});
