import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import pg from "pg";
import { fromRoot } from "../../src/config/paths";
import { checkpointMessage, entryHash, GENESIS_HASH, type ChainedEntry } from "../../src/domain/access-log";
import { checkpointSignedBy, parseCheckpointJson, signCheckpoint, ZERO_HASH } from "../../src/domain/checkpoint";
import { sign, signingKeyFromSeed } from "../../src/crypto/signing";
import { readySodium } from "../../src/crypto/sodium";
import { loadSigningKey } from "../../src/config/signing-key";
import { DEV_SIGNING_KEY_FILE } from "../../src/config/config";
import { type LogRow, rowToEntry } from "../../src/storage/postgres/log-store";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { codeOf, logApi, tokenApi } from "../helpers/client";
import { startTestVault, type TestVault } from "../helpers/vault";
import { type ChildVault, startChildVault } from "../reliability/helpers/child-vault";

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Issue 10, items 1 and 2: the access log's tamper-evidence against the insider — a database
 * superuser (triggers bypassed with session_replication_role = replica) and the service's own
 * least-privilege role (SELECT, INSERT only). Each attack runs against a real vault on real
 * PostgreSQL and must now be visible to Verify.
 */

type Row = LogRow & { seq: number };

/** Superuser SQL with the append-only triggers switched off. */
async function tamper(su: pg.Client, ...statements: [string, unknown[]?][]): Promise<void> {
  await su.query("BEGIN");
  await su.query("SET LOCAL session_replication_role = replica");
  for (const [sql, params] of statements) await su.query(sql, params ?? []);
  await su.query("COMMIT");
}

const chainRows = async (q: pg.Client, chainId: string): Promise<Row[]> =>
  (await q.query<Row>("SELECT * FROM access_log WHERE chain_id = $1 ORDER BY chain_seq", [chainId])).rows.map((r) => ({ ...r, seq: Number(r.seq), chain_seq: Number(r.chain_seq) }));

const toEntry = (r: Row): ChainedEntry & { seq: number } => rowToEntry(r);

/**
 * The rogue DBA's rewrite: change entry `k`'s justification, then recompute every hash from there
 * to the chain's end, so the chain is hash-consistent again.
 */
async function rewriteAndRehash(su: pg.Client, chainId: string, k: number): Promise<void> {
  const rows = await chainRows(su, chainId);
  let prev = k === 1 ? GENESIS_HASH : rows.find((r) => r.chain_seq === k - 1)!.hash;
  const statements: [string, unknown[]][] = [];
  for (const r of rows.filter((x) => x.chain_seq >= k)) {
    const e = toEntry(r);
    if (r.chain_seq === k) e.justification = "nothing to see here";
    const hash = entryHash(prev, e);
    statements.push(["UPDATE access_log SET justification = $2, prev_hash = $3, hash = $4 WHERE seq = $1", [r.seq, e.justification, Buffer.from(prev), Buffer.from(hash)]]);
    prev = hash;
  }
  await tamper(su, ...statements);
}

async function traffic(t: TestVault, n: number, tag: string): Promise<string> {
  const pay = tokenApi(t.clients, "payment-service");
  const { tokens } = await pay.tokenize({ fields: [{ category: "cardholder_name", value: `Insider ${tag}` }], ttlSeconds: 0, subjectRef: "" });
  for (let i = 0; i < n; i++) await pay.detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: `${tag}-${i}` });
  return tokens[0]!.token;
}

const verify = (t: TestVault, req: { anchor?: string; since?: Date } = {}) => logApi(t.clients, "ir-analyst").verify(req);

const metric = async (t: TestVault, name: string) => {
  const m = await t.vault.metrics.registry.getSingleMetric(name)?.get();
  return m?.values[0]?.value ?? 0;
};

/** A database of its own per test (tampering is not undone), with a superuser session and vaults on it. */
function freshDatabases() {
  const opened: { db: TestDatabase; su: pg.Client; prefix: string; vaults: TestVault[] }[] = [];
  let dir = "";
  beforeAll(async () => {
    await readySodium();
    dir = mkdtempSync(path.join(tmpdir(), "fv-insider-"));
  });
  afterAll(async () => {
    for (const o of opened) {
      for (const t of o.vaults) await t.stop();
      await o.su.end().catch(() => undefined);
      await o.db.drop();
      await dropRedisPrefix(o.prefix);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return async () => {
    const db = await createTestDatabase();
    const su = new pg.Client({ connectionString: db.url });
    await su.connect();
    const o = { db, su, prefix: newRedisPrefix(), vaults: [] as TestVault[] };
    opened.push(o);
    const anchor = path.join(dir, `${db.name}.anchors.jsonl`);
    const start = async (env: Record<string, string> = {}) => {
      const t = await startTestVault("postgres", { FIELDVAULT_CHECKPOINT_EVERY: "4", ...env }, { db, redisPrefix: o.prefix });
      o.vaults.push(t);
      return t;
    };
    return { db, su, start, anchor, dir };
  };
}

const cli = (t: TestVault, ...args: string[]) =>
  run("npx", ["tsx", fromRoot("src", "cli", "main.ts"), "audit", "verify", "--address", t.vault.address, "--caller", "ir-analyst", ...args], {
    cwd: fromRoot(),
    env: { ...process.env, NODE_OPTIONS: "" },
  }).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout + e.stderr }),
  );

const waitUntil = async (what: string, ok: () => boolean) => {
  for (let i = 0; i < 200 && !ok(); i++) await sleep(25);
  if (!ok()) throw new Error(`timed out waiting for ${what}`);
};

describe("Verify against a database superuser (postgres)", () => {
  const fresh = freshDatabases();

  it("opens every chain with a signed size-0 checkpoint and numbers checkpoints per key, each covering its predecessor", async () => {
    const { su, start } = await fresh();
    const t = await start();
    await traffic(t, 9, "shape");
    await t.vault.commits.checkpoint();
    const chain = t.vault.commits.chainId;
    const { rows } = await su.query("SELECT chain_seq::int AS size, number::int, version, closed FROM log_checkpoints WHERE chain_id = $1 ORDER BY number", [chain]);
    expect(rows[0]).toMatchObject({ size: 0, number: 1, version: 2, closed: false });
    expect(rows.map((r) => r.number)).toEqual(rows.map((_, i) => i + 1));
    // Each checkpoint went out on the log stream as one JSON line, verifiable on its own.
    const published = t.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "audit checkpoint");
    expect(published.map((l) => l.checkpoint.number)).toEqual(rows.map((r) => r.number));
    const key = loadSigningKey(DEV_SIGNING_KEY_FILE);
    for (const l of published) {
      const cp = parseCheckpointJson(JSON.stringify(l));
      if (typeof cp === "string") throw new Error(cp);
      expect(checkpointSignedBy(key.publicKey, cp)).toBe(true);
    }
    expect(await verify(t)).toMatchObject({ ok: true, problem: "" });
    await t.stop();
    const { rows: last } = await su.query("SELECT chain_seq::int AS size, closed FROM log_checkpoints WHERE chain_id = $1 ORDER BY number DESC LIMIT 1", [chain]);
    expect(last).toEqual([{ size: (await chainRows(su, chain)).length, closed: true }]);
  });

  it("(a) a sealed entry rewritten and re-hashed, the chain's checkpoints deleted from there on: a gap in the key's numbering", async () => {
    const { su, start } = await fresh();
    // A writer that has stopped (its chain closed), and a later one that kept checkpointing.
    const a = await start();
    await traffic(a, 14, "a-old");
    const chainA = a.vault.commits.chainId;
    await a.stop();
    const b = await start();
    await traffic(b, 6, "a-new");
    await b.vault.commits.checkpoint();
    expect(await verify(b)).toMatchObject({ ok: true });

    const k = 6;
    await rewriteAndRehash(su, chainA, k);
    await tamper(su, ["DELETE FROM log_checkpoints WHERE chain_id = $1 AND chain_seq >= $2", [chainA, k]]);
    const { rows } = await su.query("SELECT number::int FROM log_checkpoints WHERE chain_id = $1 ORDER BY number", [chainA]);
    const lastKept = rows[rows.length - 1].number;
    const r = await verify(b);
    expect(r).toMatchObject({ ok: false, problem: "missing" });
    expect(r.detail).toMatch(new RegExp(`^checkpoints ${lastKept + 1}\\.\\.\\d+ of key sk_[0-9a-f]+ are missing`));
  });

  it("(a) the same on the live writer's own chain, its newest checkpoints deleted too: its in-memory head disagrees", async () => {
    const { su, start } = await fresh();
    const t = await start();
    await traffic(t, 12, "a-live");
    await t.vault.commits.checkpoint();
    const chain = t.vault.commits.chainId;
    const rows = await chainRows(su, chain);
    const k = rows[Math.floor(rows.length / 2)]!.chain_seq;
    await rewriteAndRehash(su, chain, k);
    await tamper(su, ["DELETE FROM log_checkpoints WHERE chain_id = $1 AND chain_seq >= $2", [chain, k]]);
    const r = await verify(t);
    expect(r).toMatchObject({ ok: false, problem: "modified" });
    expect(r.detail).toContain("differs from the entry this running instance committed there");
  });

  it("(b) the live chain's tail truncated with its checkpoints: the running writer notices, and its next checkpoint keeps the gap", async () => {
    const { su, start } = await fresh();
    const t = await start();
    await traffic(t, 10, "b-live");
    await t.vault.commits.checkpoint();
    const chain = t.vault.commits.chainId;
    const rows = await chainRows(su, chain);
    const cut = rows[rows.length - 6]!;
    await tamper(
      su,
      ["DELETE FROM access_log WHERE chain_id = $1 AND chain_seq > $2", [chain, cut.chain_seq]],
      ["DELETE FROM log_checkpoints WHERE chain_id = $1 AND chain_seq > $2", [chain, cut.chain_seq]],
    );
    const r = await verify(t);
    expect(r).toMatchObject({ ok: false, problem: "missing", firstBrokenSequence: cut.seq });
    expect(r.detail).toContain("this running instance committed");

    // The writer's next checkpoint chains onto the one it committed, not onto what the database
    // kept: an alarm now, and a numbering gap any later Verify sees (even from another instance).
    expect(await metric(t, "fieldvault_audit_checkpoint_regressions_total")).toBe(0);
    await traffic(t, 1, "b-after");
    await t.vault.commits.checkpoint();
    expect(await metric(t, "fieldvault_audit_checkpoint_regressions_total")).toBeGreaterThanOrEqual(1);
    expect(t.logs.map((l) => JSON.parse(l)).some((l) => l.level === "error" && l.msg.includes("lost checkpoints"))).toBe(true);
    await t.stop();
    const other = await start();
    const later = await verify(other);
    expect(later).toMatchObject({ ok: false, problem: "missing" });
  });

  it("accepts a chain from before migration 10 (v1 checkpoints, no opening record, no numbering)", async () => {
    const { su, start } = await fresh();
    const t = await start();
    const key = loadSigningKey(DEV_SIGNING_KEY_FILE);
    const legacy = "fv-legacy0001.0a0b0c0d";
    let prev: Uint8Array = GENESIS_HASH;
    for (let i = 1; i <= 3; i++) {
      const e = { chainId: legacy, chainSeq: i, at: new Date(Date.now() - 86_400_000), caller: "spiffe://ego/payment-service", auth: "mtls" as const, peer: "ipv4:10.0.0.1:1", action: "detokenize", category: "card_number", token: `tok_${"L".repeat(22)}`, purpose: "refund", justification: `old ${i}`, outcome: "allowed", requestId: `req_old${i}`, instanceId: "fv-legacy0001", detail: "" };
      const hash = entryHash(prev, e);
      await su.query(
        `INSERT INTO access_log (chain_id, chain_seq, at, caller, auth, peer, action, category, token, purpose, justification, outcome, request_id, instance_id, detail, prev_hash, hash)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)`,
        [e.chainId, e.chainSeq, e.at, e.caller, e.auth, e.peer, e.action, e.category, e.token, e.purpose, e.justification, e.outcome, e.requestId, e.instanceId, e.detail, Buffer.from(prev), Buffer.from(hash)],
      );
      prev = hash;
    }
    const at = new Date(Date.now() - 86_000_000);
    // Exactly what a vault before migration 10 wrote: the v1 message, no number, no predecessor.
    await su.query("INSERT INTO log_checkpoints (chain_id, chain_seq, hash, at, key_id, signature) VALUES ($1, 3, $2, $3, $4, $5)", [
      legacy, Buffer.from(prev), at, key.keyId, Buffer.from(sign(key, checkpointMessage(legacy, 3, prev, at))),
    ]);
    expect(await verify(t)).toMatchObject({ ok: true, problem: "", unsealedEntries: expect.any(Number) });
    await tamper(su, ["UPDATE access_log SET justification = 'edited' WHERE chain_id = $1 AND chain_seq = 2", [legacy]]);
    expect(await verify(t)).toMatchObject({ ok: false, problem: "modified" });
  });

  describe("with FIELDVAULT_AUDIT_ANCHOR_FILE and `fieldvault audit verify --anchor FILE`", () => {
    const anchors = (file: string) => readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));

    it("(e) appends each checkpoint to the file (the same JSON as the log line); --anchor passes on an untouched log", async () => {
      const { start, anchor } = await fresh();
      const a = await start({ FIELDVAULT_AUDIT_ANCHOR_FILE: anchor });
      await traffic(a, 9, "e");
      await a.vault.commits.checkpoint();
      const logged = () => a.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "audit checkpoint").map((l) => l.checkpoint);
      await waitUntil("the anchor file", () => anchors(anchor).length === logged().length);
      expect(anchors(anchor)).toEqual(logged());
      await a.stop(); // the final checkpoint closes the chain, and is anchored too
      expect(anchors(anchor).pop()).toMatchObject({ closed: true, chain_id: a.vault.commits.chainId });
      const b = await start({ FIELDVAULT_AUDIT_ANCHOR_FILE: anchor });
      const ok = await cli(b, "--anchor", anchor);
      expect(ok).toMatchObject({ code: 0 });
      expect(ok.stdout).toMatch(/^OK: /);
    });

    it("(a, e) entries rewritten and re-hashed under the anchored checkpoint, checkpoints deleted from there, no writer running: BROKEN with the anchor", async () => {
      const { su, start, anchor } = await fresh();
      const a = await start({ FIELDVAULT_AUDIT_ANCHOR_FILE: anchor });
      await traffic(a, 12, "ae");
      const chain = a.vault.commits.chainId;
      await a.stop();
      await rewriteAndRehash(su, chain, 5);
      await tamper(su, ["DELETE FROM log_checkpoints WHERE chain_id = $1 AND chain_seq >= 5", [chain]]);
      const b = await start(); // a verifier that knows nothing but the database
      const alone = await verify(b);
      // Documented limit: without the anchor, the rewritten entries are only unsealed, and fail once
      // older than the grace window.
      expect(alone).toMatchObject({ ok: true });
      expect(alone.unsealedEntries).toBeGreaterThan(5);
      const broken = await cli(b, "--anchor", anchor);
      expect(broken.code).toBe(2);
      expect(broken.stdout).toMatch(/BROKEN at sequence \d+: (missing|modified)/);
      expect(broken.stdout).toContain("the anchored checkpoint");
    });

    it("(b, e) the newest checkpoints deleted with the entries they sealed: invisible without the anchor, BROKEN with it; an anchored writer started on it flags it itself", async () => {
      const { su, start, anchor, dir } = await fresh();
      const a = await start({ FIELDVAULT_AUDIT_ANCHOR_FILE: anchor });
      await traffic(a, 12, "cut");
      const chain = a.vault.commits.chainId;
      await a.stop();
      const newest = anchors(anchor).pop();
      const { rows } = await su.query("SELECT number::int, chain_seq::int AS size FROM log_checkpoints WHERE chain_id = $1 ORDER BY number", [chain]);
      const keep = rows[rows.length - 3];
      await tamper(
        su,
        ["DELETE FROM access_log WHERE chain_id = $1 AND chain_seq > $2", [chain, keep.size]],
        ["DELETE FROM log_checkpoints WHERE number > $1", [keep.number]],
      );
      const b = await start(); // knows nothing but the database
      // Documented limit: the database alone now looks like a log that simply ended earlier.
      expect(await cli(b)).toMatchObject({ code: 0 });
      const broken = await cli(b, "--anchor", anchor);
      expect(broken.code).toBe(2);
      expect(broken.stdout).toMatch(/BROKEN at sequence \d+: (missing|modified)/);
      expect(broken.stdout).toContain(`the anchored checkpoint ${newest.number} of key ${newest.key_id}`);
      await b.stop();
      // b continued the numbering from what the database kept: its published checkpoints (log lines,
      // e.g. in a SIEM) reuse numbers the anchor file already holds — a fork the CLI names offline.
      const fromB = b.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "audit checkpoint").map((l) => l.checkpoint);
      expect(fromB.some((cp) => cp.number <= newest.number)).toBe(true);
      const merged = path.join(dir, "merged.jsonl");
      writeFileSync(merged, readFileSync(anchor, "utf8") + fromB.map((cp) => JSON.stringify(cp) + "\n").join(""));
      const fork = await cli(b, "--anchor", merged).catch((e) => e);
      expect(fork.code).toBe(2);
      expect(fork.stdout).toMatch(/BROKEN: the anchor file's checkpoints disagree: (two different checkpoints numbered|checkpoint \d+ of key \S+ does not cover)/);

      // A vault configured with the anchor file continues the sequence from it: it reports the loss itself.
      const c = await start({ FIELDVAULT_AUDIT_ANCHOR_FILE: anchor });
      const r = await verify(c);
      expect(r).toMatchObject({ ok: false, problem: "missing" });
      expect(r.detail).toContain(`checkpoint ${newest.number} of key ${newest.key_id}`);
      await traffic(c, 1, "after-cut");
      await c.vault.commits.checkpoint();
      expect(await metric(c, "fieldvault_audit_checkpoint_regressions_total")).toBe(1);

      // A bad anchor is refused, naming the field and not echoing it.
      const forged = JSON.stringify({ ...newest, number: newest.number + 1 });
      const refused = await codeOf(verify(c, { anchor: forged }));
      expect(refused).toMatchObject({ code: status.INVALID_ARGUMENT, details: "anchor: not signed by a trusted key" });
      expect((await codeOf(verify(c, { anchor: "{not json" }))).details).toBe("anchor: not a published checkpoint (not JSON)");
      const missing = await cli(c, "--anchor", path.join(dir, "absent.jsonl"));
      expect(missing.code).toBe(1);
      expect(missing.stdout).toContain("--anchor: cannot read");
    });
  });
});

describe("unsealed entries and the grace window (postgres, a SIGKILLed writer)", () => {
  let db: TestDatabase;
  const prefix = newRedisPrefix();
  let child: ChildVault | undefined;
  let t: TestVault | undefined;

  beforeAll(async () => {
    await readySodium();
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await child?.kill9();
    await t?.stop();
    await db?.drop();
    await dropRedisPrefix(prefix);
  });

  it("counts entries no checkpoint covers; young ones pass, older than 2 × FIELDVAULT_CHECKPOINT_INTERVAL_MS fail", async () => {
    // A writer that seals rarely, killed before it seals: its chain is opened (signed) but its tail is not.
    child = await startChildVault({
      FIELDVAULT_DATABASE_URL: db.url,
      FIELDVAULT_REDIS_URL: REDIS_URL,
      FIELDVAULT_REDIS_PREFIX: prefix,
      FIELDVAULT_CHECKPOINT_INTERVAL_MS: "600000",
    });
    const pay = tokenApi(child.clients, "payment-service");
    const { tokens } = await pay.tokenize({ fields: [{ category: "cardholder_name", value: "Killed Writer" }], ttlSeconds: 0, subjectRef: "" });
    for (let i = 0; i < 5; i++) await pay.detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: `K${i}` });
    await child.kill9();
    child = undefined;

    t = await startTestVault("postgres", { FIELDVAULT_CHECKPOINT_INTERVAL_MS: "1500" }, { db, redisPrefix: prefix });
    const young = await verify(t);
    expect(young).toMatchObject({ ok: true, problem: "" });
    expect(young.unsealedEntries).toBeGreaterThanOrEqual(6);
    await sleep(3200); // past the 3 s grace window (2 × 1500 ms)
    const old = await verify(t);
    expect(old).toMatchObject({ ok: false, problem: "unsealed" });
    expect(old.unsealedEntries).toBeGreaterThanOrEqual(6);
    expect(old.detail).toContain("covered by no signed checkpoint");
  }, 90_000);
});

/** The grants docs/audit.md gives the service's own role (as test/e2e/access-log.test.ts uses them). */
const appRoleSql = (role: string, database: string) => [
  `CREATE ROLE ${role} LOGIN`,
  `GRANT CONNECT ON DATABASE ${database} TO ${role}`,
  `GRANT USAGE ON SCHEMA public TO ${role}`,
  `GRANT SELECT ON schema_migrations TO ${role}`,
  `GRANT SELECT, INSERT, UPDATE, DELETE ON tokens, token_subjects, kek_versions, vault_secrets, destroy_requests TO ${role}`,
  `GRANT SELECT, INSERT ON access_log, log_checkpoints TO ${role}`,
  `GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role}`,
];

describe("Verify against the service's own least-privilege role (postgres)", () => {
  const role = `fv_app_${randomBytes(4).toString("hex")}`;
  let owner: TestVault; // ran the migrations as the owner
  let app: TestVault; // the same database, as the service role
  let admin: pg.Client;
  let asRole: pg.Client;
  let roleUrl: string;
  let later: TestVault | undefined;

  /** A hash-consistent run of entries, as anyone who can read the canonical form can build it. */
  const fabricate = async (chainId: string, n: number, from = 0, prevHash: Uint8Array = GENESIS_HASH) => {
    let prev = prevHash;
    for (let i = 1; i <= n; i++) {
      const e = {
        chainId,
        chainSeq: from + i,
        at: new Date(),
        caller: "spiffe://ego/payment-service",
        auth: "mtls" as const,
        peer: "ipv4:10.0.0.9:4242",
        action: "detokenize",
        category: "card_number",
        token: `tok_${"F".repeat(22)}`,
        purpose: "refund",
        justification: "alibi",
        outcome: "allowed",
        requestId: `req_fake${i}`,
        instanceId: chainId.split(".")[0]!,
        detail: "",
      };
      const hash = entryHash(prev, e);
      await asRole.query(
        `INSERT INTO access_log (chain_id, chain_seq, at, caller, auth, peer, action, category, token, purpose, justification, outcome, request_id, instance_id, detail, prev_hash, hash)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)`,
        [e.chainId, e.chainSeq, e.at, e.caller, e.auth, e.peer, e.action, e.category, e.token, e.purpose, e.justification, e.outcome, e.requestId, e.instanceId, e.detail, Buffer.from(prev), Buffer.from(hash)],
      );
      prev = hash;
    }
    const { rows } = await asRole.query("SELECT min(seq)::int AS first FROM access_log WHERE chain_id = $1 AND chain_seq > $2", [chainId, from]);
    return { first: rows[0].first as number, head: prev };
  };
  /** Evidence removed again by the superuser, so the next attack starts from a clean log. */
  const scrub = (chainId: string) =>
    tamper(admin, ["DELETE FROM access_log WHERE chain_id = $1", [chainId]], ["DELETE FROM log_checkpoints WHERE chain_id = $1", [chainId]]);

  beforeAll(async () => {
    await readySodium();
    owner = await startTestVault("postgres");
    admin = new pg.Client({ connectionString: owner.db!.url });
    await admin.connect();
    for (const sql of appRoleSql(role, owner.db!.name)) await admin.query(sql);
    const url = new URL(owner.db!.url);
    url.username = role;
    roleUrl = url.toString();
    app = await startTestVault("postgres", { FIELDVAULT_DATABASE_URL: roleUrl, FIELDVAULT_CHECKPOINT_EVERY: "4" }, { db: owner.db, redisPrefix: owner.redisPrefix });
    asRole = new pg.Client({ connectionString: roleUrl });
    await asRole.connect();
  });
  afterAll(async () => {
    await asRole?.end();
    await later?.stop();
    await app?.stop();
    await admin?.query(`DROP OWNED BY ${role}`).catch(() => undefined);
    await admin?.end();
    await owner?.stop();
    const cluster = new pg.Client({ connectionString: owner.db!.url.replace(/\/[^/]+$/, "/postgres") });
    await cluster.connect();
    await cluster.query(`DROP ROLE IF EXISTS ${role}`);
    await cluster.end();
  });

  it("(c) a fabricated, hash-consistent chain is an unsigned chain, however recent its entries", async () => {
    await traffic(app, 3, "c");
    await app.vault.commits.checkpoint();
    expect(await verify(app)).toMatchObject({ ok: true });
    const forged = `${app.vault.config.instanceId}.deadbeef`;
    const { first } = await fabricate(forged, 4);
    const r = await verify(app);
    expect(r).toMatchObject({ ok: false, problem: "unsigned_chain", firstBrokenSequence: first });
    expect(r.detail).toContain(forged);
    await scrub(forged);
    expect(await verify(app)).toMatchObject({ ok: true });
  });

  it("(c) …and one with forged checkpoints (another key) names the bad signature", async () => {
    const forged = `fv-forged.${randomBytes(4).toString("hex")}`;
    const { first, head } = await fabricate(forged, 3);
    const forger = signingKeyFromSeed(randomBytes(32));
    for (const [size, h] of [[0, GENESIS_HASH], [3, head]] as const) {
      const cp = signCheckpoint(forger, { chainId: forged, size, head: h, at: new Date(), closed: false, number: size === 0 ? 1 : 2, prev: ZERO_HASH });
      await asRole.query(
        "INSERT INTO log_checkpoints (chain_id, chain_seq, hash, at, key_id, signature, version, number, prev_checkpoint, closed) VALUES ($1,$2,$3,$4,$5,$6,2,$7,$8,false)",
        [forged, size, Buffer.from(h), cp.at, cp.keyId, Buffer.from(cp.signature), cp.number, Buffer.from(cp.prev)],
      );
    }
    const r = await verify(app);
    expect(r).toMatchObject({ ok: false, problem: "bad_signature", firstBrokenSequence: first });
    await scrub(forged);
    expect(await verify(app)).toMatchObject({ ok: true });
  });

  it("(d) an entry appended at the live chain's next position: ERROR line and conflict metric, a new chain, and Verify names it", async () => {
    const token = await traffic(app, 3, "d");
    const chain = app.vault.commits.chainId;
    const rows = await chainRows(asRole, chain);
    const last = rows[rows.length - 1]!;
    const { first } = await fabricate(chain, 1, last.chain_seq, last.hash);

    // The vault's next write collides with it: that call fails closed, and the alarm goes off.
    expect(await metric(app, "fieldvault_audit_chain_conflicts_total")).toBe(0);
    const pay = tokenApi(app.clients, "payment-service");
    const failed = await codeOf(pay.detokenize({ tokens: [token], purpose: "refund", justification: "collides" }));
    expect(failed.code).toBe(status.UNAVAILABLE);
    expect(await metric(app, "fieldvault_audit_chain_conflicts_total")).toBe(1);
    const error = app.logs.map((l) => JSON.parse(l)).find((l) => l.level === "error" && l.msg.includes("next chain position"));
    expect(error).toMatchObject({ chainId: chain, chainSeq: last.chain_seq + 1 });

    // It carries on, on a new chain; the old one is closed by a signed checkpoint where its own entries end.
    const { results } = await pay.detokenize({ tokens: [token], purpose: "refund", justification: "after" });
    expect(results[0]!.outcome?.$case).toBe("value");
    expect(app.vault.commits.chainId).not.toBe(chain);
    expect(await verify(app)).toMatchObject({ ok: false, problem: "appended", firstBrokenSequence: first });
    await app.vault.commits.checkpoint();
    const { rows: closed } = await admin.query("SELECT chain_seq::int AS size FROM log_checkpoints WHERE chain_id = $1 AND closed", [chain]);
    expect(closed).toEqual([{ size: last.chain_seq }]);

    // Another instance, with no memory of any of it, still sees the foreign entry after the close.
    await app.stop();
    later = await startTestVault("postgres", { FIELDVAULT_DATABASE_URL: roleUrl }, { db: owner.db, redisPrefix: owner.redisPrefix });
    const r = await verify(later);
    expect(r).toMatchObject({ ok: false, problem: "appended", firstBrokenSequence: first });
    expect(r.detail).toContain(`closed the chain at chain_seq ${last.chain_seq}`);
  });
});
