import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import pg from "pg";
import YAML from "yaml";
import { fromRoot } from "../../src/config/paths";
import { checkpointMessage, entryHash } from "../../src/domain/access-log";
import { sign, signingKeyFromSeed, type SigningKey } from "../../src/crypto/signing";
import { readySodium } from "../../src/crypto/sodium";
import { rowToEntry, type LogRow } from "../../src/storage/postgres/log-store";
import { redisKeys } from "../helpers/backends";
import { clients, type Clients, codeOf, logApi, tokenApi } from "../helpers/client";
import { clientCredentials, devFile, TLS_ENV } from "../helpers/tls";
import { startTestVault, type TestVault } from "../helpers/vault";

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nextYear = new Date().getUTCFullYear() + 1;
const ID = (name: string) => `spiffe://ego/${name}`;

/**
 * The access log over real mutual TLS on PostgreSQL + Redis (DESIGN §7): who may read it, Query,
 * every outcome's entry, fail-closed reveals, rate budgets, and Verify against superuser tampering.
 */
describe("AccessLog (postgres + redis, mutual TLS)", () => {
  let t: TestVault;
  let dir: string;
  let su: pg.Client; // a superuser session on the vault's database: the "rogue DBA"
  let oldKey: SigningKey; // a retired signing key the vault is told to trust
  const open: Clients[] = [];
  const as = (name: string) => {
    const c = clients(t.vault.address, clientCredentials(name));
    open.push(c);
    return c;
  };
  let pay: ReturnType<typeof tokenApi>;
  let book: ReturnType<typeof tokenApi>;
  let desk: ReturnType<typeof tokenApi>;
  let ir: ReturnType<typeof logApi>;

  const tokenize = async (api: ReturnType<typeof tokenApi>, category: string, value: string, ttlSeconds = 0) =>
    (await api.tokenize({ fields: [{ category, value }], ttlSeconds, subjectRef: "" })).tokens[0]!;
  const count = async (sql: string, params: unknown[] = []) => (await su.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, params)).rows[0]!.n;

  beforeAll(async () => {
    await readySodium();
    dir = mkdtempSync(path.join(tmpdir(), "fv-audit-"));
    // The default policy, with a tiny detokenize budget for support-desk (the rate-limit test).
    const policy = YAML.parse(readFileSync(fromRoot("policy", "default.yaml"), "utf8"));
    policy.callers["support-desk"].detokenize_per_minute = 2;
    writeFileSync(path.join(dir, "policy.yaml"), YAML.stringify(policy));
    const oldSeed = randomBytes(32);
    writeFileSync(path.join(dir, "old-signing.key"), oldSeed.toString("base64") + "\n");
    oldKey = signingKeyFromSeed(oldSeed);
    t = await startTestVault("postgres", {
      ...TLS_ENV,
      FIELDVAULT_POLICY_FILE: path.join(dir, "policy.yaml"),
      FIELDVAULT_CHECKPOINT_EVERY: "4",
      FIELDVAULT_AUDIT_TRUSTED_KEYS: Buffer.from(oldKey.publicKey).toString("base64"),
    });
    su = new pg.Client({ connectionString: t.db!.url });
    await su.connect();
    pay = tokenApi(as("payment-service"), undefined);
    book = tokenApi(as("booking-service"), undefined);
    desk = tokenApi(as("support-desk"), undefined);
    ir = logApi(as("ir-analyst"), undefined);
  });
  afterAll(async () => {
    await su?.end();
    for (const c of open) c.close();
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  describe("who may read the log", () => {
    it.each(["payment-service", "booking-service", "support-desk", "sec-admin-1"])("refuses Query and Verify to %s with PERMISSION_DENIED, and logs the refusal", async (name) => {
      const api = logApi(as(name), undefined);
      expect((await codeOf(api.query({}))).code).toBe(status.PERMISSION_DENIED);
      expect((await codeOf(api.verify({}))).code).toBe(status.PERMISSION_DENIED);
      const { rows } = await su.query("SELECT action, outcome, auth FROM access_log WHERE caller = $1 ORDER BY seq", [ID(name)]);
      expect(rows).toEqual([
        { action: "log_query", outcome: "denied", auth: "mtls" },
        { action: "log_verify", outcome: "denied", auth: "mtls" },
      ]);
    });

    it("lets ir-analyst query and verify, and each call is itself logged (PCI DSS 10.2.1)", async () => {
      const token = (await tokenize(pay, "cardholder_name", "Logged Reader")).token;
      await ir.query({ token });
      const second = await ir.query({ action: "log_query", caller: ID("ir-analyst") });
      // The newest log_query entry is this very query; the one before it recorded the token filter.
      expect(second.length).toBeGreaterThanOrEqual(2);
      expect(JSON.parse(second[0]!.detail)).toMatchObject({ action: "log_query", caller: ID("ir-analyst") });
      expect(JSON.parse(second[1]!.detail)).toMatchObject({ token });
      expect(second[1]).toMatchObject({ caller: ID("ir-analyst"), auth: "mtls", outcome: "ok" });
      await ir.verify({});
      const { rows } = await su.query("SELECT outcome, detail FROM access_log WHERE action = 'log_verify' AND caller = $1", [ID("ir-analyst")]);
      expect(rows).toHaveLength(1);
      expect(rows[0].outcome).toBe("ok");
      expect(rows[0].detail).toMatch(/entries=\d+ checkpoints=\d+/);
    });
  });

  describe("Query", () => {
    it("filters by token, caller, category, purpose, outcome and action, newest first", async () => {
      const card = (await tokenize(pay, "card_number", "5105 1051 0510 5100")).token;
      const email = (await tokenize(book, "email", "query.filter@example.com")).token;
      await pay.detokenize({ tokens: [card], purpose: "payment_authorization", justification: "ORDER-9" });
      await pay.detokenize({ tokens: [card], purpose: "marketing", justification: "newsletter" });
      await book.detokenize({ tokens: [email], purpose: "booking_fulfillment", justification: "BK-1" });

      const byToken = await ir.query({ token: card });
      // The tokenize entry names the token too, so a token's creator is found by it.
      expect(byToken.map((e) => [e.action, e.outcome, e.purpose])).toEqual([
        ["detokenize", "denied", "marketing"],
        ["detokenize", "allowed", "payment_authorization"],
        ["tokenize", "ok", ""],
      ]);
      expect(byToken[2]!.caller).toBe(ID("payment-service"));
      expect(byToken[0]!.sequence).toBeGreaterThan(byToken[1]!.sequence);

      const denied = await ir.query({ caller: ID("payment-service"), outcome: "denied", action: "detokenize" });
      expect(denied.map((e) => e.token)).toContain(card);
      expect(denied.every((e) => e.outcome === "denied" && e.caller === ID("payment-service"))).toBe(true);

      const fulfil = await ir.query({ category: "email", purpose: "booking_fulfillment" });
      expect(fulfil.map((e) => e.token)).toEqual([email]);
      expect(await ir.query({ category: "email", purpose: "customer_support", token: email })).toEqual([]);
    });

    it("filters by time range: since inclusive, until exclusive", async () => {
      const token = (await tokenize(book, "phone", "+44 20 7946 0001")).token;
      await book.detokenize({ tokens: [token], purpose: "customer_support", justification: "first" });
      const [first] = await ir.query({ token });
      // Wait until the clock has moved past the first entry, then make a second.
      while (Date.now() <= first!.time!.getTime() + 5) await sleep(5);
      const cut = new Date();
      while (Date.now() <= cut.getTime() + 5) await sleep(5);
      await book.detokenize({ tokens: [token], purpose: "customer_support", justification: "second" });
      expect((await ir.query({ token, since: cut })).map((e) => e.justification)).toEqual(["second"]);
      expect((await ir.query({ token, until: cut, action: "detokenize" })).map((e) => e.justification)).toEqual(["first"]);
      expect((await ir.query({ token, since: first!.time, until: cut })).map((e) => e.justification)).toEqual(["first"]);
      expect((await codeOf(ir.query({ since: cut, until: cut }))).code).toBe(status.INVALID_ARGUMENT);
    });

    it("pages with an opaque cursor: default 100, page_size up to 1000, the last entry has no cursor", async () => {
      // 130 not_found entries for this caller in one call.
      const unknown = Array.from({ length: 130 }, () => `tok_${randomBytes(16).toString("base64url").replace(/[-_]/g, "A").slice(0, 22)}`);
      await pay.detokenize({ tokens: unknown, purpose: "refund", justification: "PAGING" });
      const filter = { caller: ID("payment-service"), outcome: "not_found", purpose: "refund" };
      const all = await ir.query({ ...filter, pageSize: 5000 });
      expect(all).toHaveLength(130);
      expect(all[129]!.nextPageToken).toBe("");

      const firstPage = await ir.query(filter);
      expect(firstPage).toHaveLength(100);
      expect(firstPage[99]!.nextPageToken).not.toBe("");

      const pages: number[][] = [];
      let cursor = "";
      do {
        const page = await ir.query({ ...filter, pageSize: 40, pageToken: cursor });
        pages.push(page.map((e) => e.sequence));
        cursor = page[page.length - 1]?.nextPageToken ?? "";
      } while (cursor);
      expect(pages.map((p) => p.length)).toEqual([40, 40, 40, 10]);
      expect(pages.flat()).toEqual(all.map((e) => e.sequence));
      expect(new Set(all.map((e) => e.token))).toEqual(new Set(unknown));

      expect((await codeOf(ir.query({ pageToken: "not-a-cursor" }))).code).toBe(status.INVALID_ARGUMENT);
    });
  });

  describe("the entry for each outcome", () => {
    it("records allowed, denied, not_found, expired and rate_limited with every field, never a value", async () => {
      const name = await tokenize(pay, "cardholder_name", "Outcome Canary");
      const expiring = await tokenize(book, "email", "expiring.canary@example.com", 1);
      const phones = await Promise.all(["+44 20 7946 0101", "+44 20 7946 0102", "+44 20 7946 0103"].map((v) => tokenize(book, "phone", v)));
      const missing = `tok_${"Z".repeat(22)}`;

      const first = await pay.detokenize({ tokens: [name.token, missing], purpose: "refund", justification: "RF-77" });
      await book.detokenize({ tokens: [name.token], purpose: "booking_fulfillment", justification: "why not" });
      while (Date.now() <= expiring.expiresAt!.getTime() + 20) await sleep(50);
      await book.detokenize({ tokens: [expiring.token], purpose: "customer_support", justification: "late" });
      const { results } = await desk.detokenize({ tokens: phones.map((p) => p.token), purpose: "customer_support", justification: "CS-5" });
      expect(results.map((r) => (r.outcome?.$case === "error" ? r.outcome.value.code : "value"))).toEqual(["value", "value", "RESOURCE_EXHAUSTED"]);
      // The refused item says when the caller's budget for phone comes back (the minute's end); other errors say 0.
      const retryAfter = (r: (typeof results)[number] | undefined) => (r?.outcome?.$case === "error" ? r.outcome.value.retryAfterMs : -1);
      const untilMinute = 60_000 - (Date.now() % 60_000);
      expect(retryAfter(results[2])).toBeGreaterThan(0);
      const off = Math.abs(retryAfter(results[2]) - untilMinute);
      expect(Math.min(off, Math.abs(off - 60_000))).toBeLessThan(2_000); // (a minute may have begun in between)
      expect(retryAfter(first.results[1])).toBe(0);

      const pick = async (token: string, caller: string) => {
        const [e] = await ir.query({ token, caller: ID(caller), action: "detokenize" });
        return e!;
      };
      const common = { auth: "mtls", action: "detokenize", instanceId: t.vault.config.instanceId };
      expect(await pick(name.token, "payment-service")).toMatchObject({ ...common, caller: ID("payment-service"), category: "cardholder_name", purpose: "refund", justification: "RF-77", outcome: "allowed", detail: "" });
      expect(await pick(missing, "payment-service")).toMatchObject({ ...common, category: "", purpose: "refund", justification: "RF-77", outcome: "not_found" });
      expect(await pick(name.token, "booking-service")).toMatchObject({ ...common, category: "cardholder_name", purpose: "booking_fulfillment", justification: "why not", outcome: "denied" });
      expect(await pick(expiring.token, "booking-service")).toMatchObject({ ...common, category: "email", purpose: "customer_support", outcome: "expired" });
      expect(await pick(phones[2]!.token, "support-desk")).toMatchObject({ ...common, category: "phone", purpose: "customer_support", justification: "CS-5", outcome: "rate_limited" });
      expect((await pick(phones[0]!.token, "support-desk")).outcome).toBe("allowed");

      const e = await pick(name.token, "payment-service");
      expect(e.requestId).toMatch(/^req_/);
      expect(e.peer).toMatch(/127\.0\.0\.1:\d+/);
      expect(e.time!.getTime()).toBeGreaterThan(Date.now() - 60_000);
      expect(e.chainId.startsWith(t.vault.config.instanceId)).toBe(true);
      // One request id for the two items of one call; no plaintext anywhere in the log.
      expect((await pick(missing, "payment-service")).requestId).toBe(e.requestId);
      const dump = JSON.stringify((await su.query("SELECT * FROM access_log")).rows);
      for (const v of ["Outcome Canary", "expiring.canary", "2079460101"]) expect(dump).not.toContain(v);
    });

    it("keeps the rate budget in Redis under the vault's prefix, per policy caller and category", async () => {
      const keys = await redisKeys(t.redisPrefix!);
      expect(keys.some((k) => k.startsWith(`${t.redisPrefix}rl:support-desk:phone:`))).toBe(true);
      expect(await count("access_log WHERE caller = $1 AND outcome = 'rate_limited'", [ID("support-desk")])).toBe(1);
    });
  });

  describe("durable before reveal", () => {
    it("reveals nothing while the log cannot be written, then recovers with an unbroken chain", async () => {
      const token = (await tokenize(pay, "card_number", "4242 4242 4242 4242")).token;
      const before = await count("access_log");
      await su.query(`CREATE FUNCTION fv_test_log_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'log disk full'; END $$`);
      await su.query("CREATE TRIGGER fv_test_log_down BEFORE INSERT ON access_log FOR EACH ROW EXECUTE FUNCTION fv_test_log_down()");
      try {
        const failed = await codeOf(pay.detokenize({ tokens: [token], purpose: "payment_authorization", justification: "outage" }));
        expect(failed.code).toBe(status.UNAVAILABLE);
        expect(failed.details).not.toContain("4242");
        expect((await codeOf(ir.query({ token }))).code).toBe(status.UNAVAILABLE);
      } finally {
        await su.query("DROP TRIGGER fv_test_log_down ON access_log");
        await su.query("DROP FUNCTION fv_test_log_down()");
      }
      expect(await count("access_log")).toBe(before);
      const { results } = await pay.detokenize({ tokens: [token], purpose: "payment_authorization", justification: "after" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: "4242424242424242" });
      await t.vault.commits.checkpoint();
      expect(await ir.verify({})).toMatchObject({ ok: true, problem: "" });
    });
  });

  describe("Verify against tampering by a database superuser", () => {
    const chain = () => t.vault.commits.chainId;
    /** A sealed entry in the middle of this vault's chain. */
    const middle = async () => {
      await t.vault.commits.checkpoint();
      const { rows } = await su.query<{ chain_seq: number }>("SELECT max(chain_seq)::int AS chain_seq FROM log_checkpoints WHERE chain_id = $1", [chain()]);
      // An entry no checkpoint seals exactly: a rewrite there is named by the broken link after it.
      // (A rewrite of a sealed entry is named from the last good checkpoint, which is correct but coarser.)
      const { rows: sealed } = await su.query<{ chain_seq: number }>("SELECT chain_seq::int FROM log_checkpoints WHERE chain_id = $1", [chain()]);
      const sealedAt = new Set(sealed.map((r) => r.chain_seq));
      let k = Math.floor(rows[0]!.chain_seq / 2);
      while (sealedAt.has(k) || sealedAt.has(k + 1)) k--;
      expect(k).toBeGreaterThan(3);
      return k;
    };
    const entryAt = async (k: number) =>
      (await su.query<LogRow>("SELECT * FROM access_log WHERE chain_id = $1 AND chain_seq = $2", [chain(), k])).rows[0]!;
    /** Runs SQL as a superuser with the append-only triggers switched off. */
    const tamper = async (...statements: [string, unknown[]?][]) => {
      await su.query("BEGIN");
      await su.query("SET LOCAL session_replication_role = replica");
      for (const [sql, params] of statements) await su.query(sql, params ?? []);
      await su.query("COMMIT");
    };

    beforeAll(async () => {
      // Enough traffic for several checkpoints.
      const token = (await tokenize(pay, "card_expiry", `11/${nextYear}`)).token;
      for (let i = 0; i < 12; i++) await pay.detokenize({ tokens: [token], purpose: "refund", justification: `R${i}` });
      await t.vault.commits.checkpoint();
    });

    it("verifies a clean log, counting every entry and checkpoint", async () => {
      const entries = await count("access_log");
      const checkpoints = await count("log_checkpoints");
      const r = await ir.verify({});
      expect(r).toMatchObject({ ok: true, firstBrokenSequence: 0, problem: "" });
      expect(r.entriesChecked).toBe(entries);
      expect(r.checkpointsChecked).toBe(checkpoints);
      expect(checkpoints).toBeGreaterThan(2);
    });

    it("verifies ok while other callers keep writing (one consistent snapshot)", async () => {
      const token = (await tokenize(pay, "cardholder_name", "Busy Writer")).token;
      let writing = true;
      const writers = Array.from({ length: 4 }, async () => {
        let n = 0;
        while (writing) {
          await pay.detokenize({ tokens: [token], purpose: "payment_authorization", justification: "busy" });
          n++;
        }
        return n;
      });
      const results = [];
      for (let i = 0; i < 6; i++) results.push(await ir.verify({}));
      writing = false;
      const written = await Promise.all(writers);
      expect(written.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
      for (const r of results) expect(r).toMatchObject({ ok: true, problem: "", detail: "" });
    });

    it("the triggers stop the service's own writes: UPDATE and DELETE fail without the superuser bypass", async () => {
      await expect(su.query("UPDATE access_log SET outcome = 'allowed' WHERE seq = 1")).rejects.toThrow(/append-only/);
      await expect(su.query("DELETE FROM log_checkpoints")).rejects.toThrow(/append-only/);
    });

    it("names a row UPDATEd as modified at its sequence", async () => {
      const row = await entryAt(await middle());
      await tamper(["UPDATE access_log SET outcome = 'denied' WHERE seq = $1", [row.seq]]);
      try {
        expect(await ir.verify({})).toMatchObject({ ok: false, problem: "modified", firstBrokenSequence: Number(row.seq) });
      } finally {
        await tamper(["UPDATE access_log SET outcome = $2 WHERE seq = $1", [row.seq, row.outcome]]);
      }
      expect((await ir.verify({})).ok).toBe(true);
    });

    it("names a row rewritten with a recomputed hash as modified (the next link no longer fits)", async () => {
      const row = await entryAt(await middle());
      const forged = { ...rowToEntry({ ...row, seq: Number(row.seq), chain_seq: Number(row.chain_seq) }), justification: "nothing to see" };
      await tamper(["UPDATE access_log SET justification = $2, hash = $3 WHERE seq = $1", [row.seq, forged.justification, Buffer.from(entryHash(forged.prevHash, forged))]]);
      try {
        expect(await ir.verify({})).toMatchObject({ ok: false, problem: "modified", firstBrokenSequence: Number(row.seq) });
      } finally {
        await tamper(["UPDATE access_log SET justification = $2, hash = $3 WHERE seq = $1", [row.seq, row.justification, row.hash]]);
      }
    });

    it("names a row DELETEd as missing, at the entry that follows the gap", async () => {
      const k = await middle();
      const next = await entryAt(k + 1);
      await tamper(
        ["CREATE TEMP TABLE saved_row AS SELECT * FROM access_log WHERE chain_id = $1 AND chain_seq = $2", [chain(), k]],
        ["DELETE FROM access_log WHERE chain_id = $1 AND chain_seq = $2", [chain(), k]],
      );
      try {
        const r = await ir.verify({});
        expect(r).toMatchObject({ ok: false, problem: "missing", firstBrokenSequence: Number(next.seq) });
        expect(r.detail).toContain(`chain_seq ${k} missing`);
      } finally {
        await tamper(["INSERT INTO access_log SELECT * FROM saved_row"], ["DROP TABLE saved_row"]);
      }
      expect((await ir.verify({})).ok).toBe(true);
    });

    it("names two swapped rows as reordered, at the earlier one", async () => {
      const k = await middle();
      const [a, b] = [await entryAt(k), await entryAt(k + 1)];
      const swap = (x: LogRow, y: LogRow): [string, unknown[]][] => [
        ["UPDATE access_log SET chain_seq = -1 WHERE seq = $1", [x.seq]],
        ["UPDATE access_log SET chain_seq = $2 WHERE seq = $1", [y.seq, x.chain_seq]],
        ["UPDATE access_log SET chain_seq = $2 WHERE seq = $1", [x.seq, y.chain_seq]],
      ];
      await tamper(...swap(a, b));
      try {
        expect(await ir.verify({})).toMatchObject({ ok: false, problem: "reordered", firstBrokenSequence: Number(a.seq) });
      } finally {
        await tamper(...swap({ ...a, chain_seq: b.chain_seq }, { ...b, chain_seq: a.chain_seq }));
      }
      expect((await ir.verify({})).ok).toBe(true);
    });

    it("names a forged checkpoint (signed by another key) as bad_signature", async () => {
      const row = await entryAt(await middle());
      const at = new Date();
      const forger = signingKeyFromSeed(randomBytes(32));
      const realKeyId = (await su.query("SELECT key_id FROM log_checkpoints LIMIT 1")).rows[0].key_id;
      const sig = sign(forger, checkpointMessage(chain(), Number(row.chain_seq), row.hash, at));
      await tamper([
        "INSERT INTO log_checkpoints (chain_id, chain_seq, hash, at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6)",
        [chain(), row.chain_seq, row.hash, at, realKeyId, Buffer.from(sig)],
      ]);
      try {
        const r = await ir.verify({});
        expect(r).toMatchObject({ ok: false, problem: "bad_signature", firstBrokenSequence: Number(row.seq) });
      } finally {
        await tamper(["DELETE FROM log_checkpoints WHERE signature = $1", [Buffer.from(sig)]]);
      }
      expect((await ir.verify({})).ok).toBe(true);
    });

    it("accepts a checkpoint signed by a retired key listed in FIELDVAULT_AUDIT_TRUSTED_KEYS", async () => {
      const row = await entryAt(await middle());
      const at = new Date();
      const sig = sign(oldKey, checkpointMessage(chain(), Number(row.chain_seq), row.hash, at));
      await tamper([
        "INSERT INTO log_checkpoints (chain_id, chain_seq, hash, at, key_id, signature) VALUES ($1, $2, $3, $4, $5, $6)",
        [chain(), row.chain_seq, row.hash, at, oldKey.keyId, Buffer.from(sig)],
      ]);
      expect(await ir.verify({})).toMatchObject({ ok: true });
    });

    it("names a truncated chain (entries cut after a signed checkpoint's position) as missing", async () => {
      await t.vault.commits.checkpoint();
      const { rows } = await su.query<{ chain_seq: number }>("SELECT max(chain_seq)::int AS chain_seq FROM log_checkpoints WHERE chain_id = $1", [chain()]);
      const sealed = rows[0]!.chain_seq;
      const survivor = await entryAt(sealed - 3);
      await tamper(
        ["CREATE TEMP TABLE saved_tail AS SELECT * FROM access_log WHERE chain_id = $1 AND chain_seq > $2", [chain(), sealed - 3]],
        ["DELETE FROM access_log WHERE chain_id = $1 AND chain_seq > $2", [chain(), sealed - 3]],
      );
      try {
        const r = await ir.verify({});
        expect(r).toMatchObject({ ok: false, problem: "missing", firstBrokenSequence: Number(survivor.seq) });
      } finally {
        await tamper(["INSERT INTO access_log SELECT * FROM saved_tail"], ["DROP TABLE saved_tail"]);
      }
      expect((await ir.verify({})).ok).toBe(true);
    });

    it("verifies a time range and rejects an empty one", async () => {
      const r = await ir.verify({ since: new Date(Date.now() - 60_000), until: new Date(Date.now() + 60_000) });
      expect(r.ok).toBe(true);
      expect(r.entriesChecked).toBeGreaterThan(0);
      const now = new Date();
      expect((await codeOf(ir.verify({ since: now, until: now }))).code).toBe(status.INVALID_ARGUMENT);
    });
  });

  describe("fieldvault audit CLI (mutual TLS as ir-analyst)", () => {
    const cli = (...args: string[]) =>
      run("npx", ["tsx", fromRoot("src", "cli", "main.ts"), "audit", ...args, "--address", t.vault.address, "--ca", devFile("ca.pem"), "--cert", devFile("ir-analyst.pem"), "--key", devFile("ir-analyst.key")], {
        cwd: fromRoot(),
        env: { ...process.env, NODE_OPTIONS: "" },
      });

    it("verify prints OK for an intact log and exits 0", async () => {
      const { stdout } = await cli("verify");
      expect(stdout).toMatch(/^OK: \d+ entries and \d+ signed checkpoints verified/);
    });

    it("query prints a table, --json prints JSON lines, export writes CSV", async () => {
      const token = (await tokenize(pay, "cardholder_name", "Cli Person")).token;
      await pay.detokenize({ tokens: [token], purpose: "refund", justification: "CLI-1" });
      const table = (await cli("query", "--token", token)).stdout.trim().split("\n");
      expect(table[0]).toMatch(/^SEQ\s+TIME\s+CALLER\s+AUTH\s+ACTION\s+CATEGORY\s+TOKEN\s+PURPOSE\s+OUTCOME/);
      expect(table).toHaveLength(3); // the reveal, then the tokenize that created the token
      expect(table[1]).toContain(ID("payment-service"));
      expect(table[1]).toContain("allowed");
      expect(table[2]).toContain("tokenize");

      const json = (await cli("query", "--token", token, "--json")).stdout.trim().split("\n").map((l) => JSON.parse(l));
      expect(json).toEqual([
        expect.objectContaining({ token, caller: ID("payment-service"), purpose: "refund", justification: "CLI-1", outcome: "allowed", auth: "mtls" }),
        expect.objectContaining({ token, caller: ID("payment-service"), action: "tokenize" }),
      ]);

      const file = path.join(dir, "export.csv");
      await cli("export", "--format", "csv", "--out", file, "--by", ID("payment-service"), "--token", token);
      const lines = readFileSync(file, "utf8").trim().split("\n");
      expect(lines[0]).toBe("sequence,time,caller,auth,peer,action,category,token,purpose,justification,outcome,request_id,instance_id,chain_id,chain_seq,detail");
      expect(lines).toHaveLength(3);
      expect(lines[1]).toContain(token);
    });

    it("public-key prints the base64 public key to list in FIELDVAULT_AUDIT_TRUSTED_KEYS", async () => {
      const { stdout } = await run("npx", ["tsx", fromRoot("src", "cli", "main.ts"), "audit", "public-key", path.join(dir, "old-signing.key")], { cwd: fromRoot(), env: { ...process.env, NODE_OPTIONS: "" } });
      expect(stdout.trim()).toBe(`${Buffer.from(oldKey.publicKey).toString("base64")}  ${oldKey.keyId}`);
    });

    it("verify prints the first broken sequence and exits 2 when a row was altered", async () => {
      await t.vault.commits.checkpoint();
      const { rows } = await su.query("SELECT seq FROM access_log WHERE chain_id = $1 AND chain_seq = 3", [t.vault.commits.chainId]);
      const seq = Number(rows[0].seq);
      await su.query("BEGIN");
      await su.query("SET LOCAL session_replication_role = replica");
      await su.query("UPDATE access_log SET caller = 'someone-else' WHERE seq = $1", [seq]);
      await su.query("COMMIT");
      const err = await cli("verify").then(
        () => undefined,
        (e: { code: number; stdout: string }) => e,
      );
      expect(err?.code).toBe(2);
      expect(err?.stdout).toContain(`BROKEN at sequence ${seq}: modified`);
    });
  });
});

describe("AccessLog on the embedded backend (development, self-asserted)", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("embedded", { FIELDVAULT_CHECKPOINT_EVERY: "3" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("queries, verifies, and names a modified row", async () => {
    const pay = tokenApi(t.clients, "payment-service");
    const ir = logApi(t.clients, "ir-analyst");
    const { tokens } = await pay.tokenize({ fields: [{ category: "cardholder_name", value: "Embedded Person" }], ttlSeconds: 0, subjectRef: "" });
    for (let i = 0; i < 5; i++) await pay.detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: `E${i}` });
    const entries = await ir.query({ token: tokens[0]!.token, action: "detokenize" });
    expect(entries.map((e) => e.justification)).toEqual(["E4", "E3", "E2", "E1", "E0"]);
    expect(entries[0]!.auth).toBe("self_asserted");
    await t.vault.commits.checkpoint();
    expect(await ir.verify({})).toMatchObject({ ok: true });
    const target = entries[2]!.sequence;
    await t.vault.db.transaction(async (tx) => {
      await tx.query("SET LOCAL session_replication_role = replica", []);
      await tx.query("UPDATE access_log SET purpose = 'fraud_investigation' WHERE seq = $1", [target]);
    });
    expect(await ir.verify({})).toMatchObject({ ok: false, problem: "modified", firstBrokenSequence: target });
  });
});

/** The SQL docs/audit.md gives for running the service under a role that cannot rewrite the log. */
const appRoleSql = (role: string, database: string) => [
  `CREATE ROLE ${role} LOGIN`,
  `GRANT CONNECT ON DATABASE ${database} TO ${role}`,
  `GRANT USAGE ON SCHEMA public TO ${role}`,
  `GRANT SELECT ON schema_migrations TO ${role}`,
  `GRANT SELECT, INSERT, UPDATE, DELETE ON tokens, token_subjects, kek_versions, vault_secrets, destroy_requests TO ${role}`,
  `GRANT SELECT, INSERT ON access_log, log_checkpoints TO ${role}`,
  `GRANT SELECT, INSERT, DELETE ON cvv_consumed TO ${role}`,
  `GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role}`,
];

describe("the service under a least-privilege database role (postgres)", () => {
  const role = `fv_app_${randomBytes(4).toString("hex")}`;
  let owner: TestVault; // ran the migrations as the owner
  let app: TestVault; // the same database, as the service role
  let admin: pg.Client;
  let asRole: pg.Client;

  beforeAll(async () => {
    owner = await startTestVault("postgres");
    admin = new pg.Client({ connectionString: owner.db!.url });
    await admin.connect();
    for (const sql of appRoleSql(role, owner.db!.name)) await admin.query(sql);
    const url = new URL(owner.db!.url);
    url.username = role;
    app = await startTestVault("postgres", { FIELDVAULT_DATABASE_URL: url.toString() }, { db: owner.db, redisPrefix: owner.redisPrefix });
    asRole = new pg.Client({ connectionString: url.toString() });
    await asRole.connect();
  });
  afterAll(async () => {
    await asRole?.end();
    await app?.stop();
    await admin?.query(`DROP OWNED BY ${role}`).catch(() => undefined);
    await admin?.end();
    await owner?.stop();
    const cluster = new pg.Client({ connectionString: owner.db!.url.replace(/\/[^/]+$/, "/postgres") });
    await cluster.connect();
    await cluster.query(`DROP ROLE IF EXISTS ${role}`);
    await cluster.end();
  });

  it("serves and logs calls, but cannot UPDATE, DELETE, TRUNCATE or disable the log's triggers", async () => {
    const pay = tokenApi(app.clients, "payment-service");
    const { tokens } = await pay.tokenize({ fields: [{ category: "cardholder_name", value: "Role Person" }], ttlSeconds: 0, subjectRef: "" });
    const { results } = await pay.detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: "ROLE-1" });
    expect(results[0]!.outcome).toEqual({ $case: "value", value: "Role Person" });
    await app.vault.commits.checkpoint();
    expect(await logApi(app.clients, "ir-analyst").verify({})).toMatchObject({ ok: true });

    await expect(asRole.query("UPDATE access_log SET outcome = 'allowed'")).rejects.toThrow(/permission denied/);
    await expect(asRole.query("DELETE FROM access_log")).rejects.toThrow(/permission denied/);
    await expect(asRole.query("DELETE FROM log_checkpoints")).rejects.toThrow(/permission denied/);
    await expect(asRole.query("TRUNCATE access_log")).rejects.toThrow(/permission denied/);
    await expect(asRole.query("ALTER TABLE access_log DISABLE TRIGGER ALL")).rejects.toThrow(/must be owner/);
    await expect(asRole.query("SET session_replication_role = replica")).rejects.toThrow(/permission denied/);
  });
});
