import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import { fromRoot } from "../../src/config/paths";
import { FORMAT_PKCS11_AES_GCM } from "../../src/crypto/pkcs11-root-key";
import { rootKeyId } from "../../src/crypto/root-key";
import { readySodium } from "../../src/crypto/sodium";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { type Clients, clients, tokenApi } from "../helpers/client";
import { keyApi } from "../helpers/key-admin";
import { createSoftHsm, refusedStart, type SoftHsm } from "../helpers/softhsm";
import { clientCredentials, TLS_ENV } from "../helpers/tls";
import { BACKENDS, type Backend } from "../helpers/vault";
import { type ChildVault, startChildVault as startChild } from "../reliability/helpers/child-vault";

/** A vault process; PGlite's first start (initdb) and tsx are slow on a loaded CI machine. */
const startChildVault = (env: Record<string, string>) => startChild(env, { startTimeoutMs: 150_000 });

/**
 * The pkcs11 root-key provider on a real PKCS#11 module (SoftHSM2), each describe with its own
 * token folder. Vaults run as real processes (src/main.ts): SoftHSM reads SOFTHSM2_CONF from the
 * process environment, which Jest does not let a test set for itself.
 */
jest.setTimeout(180_000);

const pay = (c: Clients) => tokenApi(c, "payment-service");
const book = (c: Clients) => tokenApi(c, "booking-service");
const admin = (c: Clients) => keyApi(c, "sec-admin-1");
const CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444"];

async function query<T>(db: TestDatabase, sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: db.url });
  await c.connect();
  try {
    return (await c.query(sql)).rows as T[];
  } finally {
    await c.end();
  }
}

async function rootIds(db: TestDatabase): Promise<{ keks: string[]; secrets: string[] }> {
  const keks = await query<{ r: string }>(db, "SELECT DISTINCT root_key_id AS r FROM kek_versions WHERE root_key_id IS NOT NULL ORDER BY 1");
  const secrets = await query<{ r: string }>(db, "SELECT DISTINCT root_key_id AS r FROM vault_secrets ORDER BY 1");
  return { keks: keks.map((r) => r.r), secrets: secrets.map((r) => r.r) };
}

async function revealCards(c: Clients, tokens: string[]): Promise<unknown[]> {
  const { results } = await pay(c).detokenize({ tokens, purpose: "payment_authorization", justification: "HSM-TEST" });
  return results.map((r) => r.outcome);
}

const pgEnv = (db: TestDatabase, redisPrefix: string) => ({ FIELDVAULT_DATABASE_URL: db.url, FIELDVAULT_REDIS_URL: REDIS_URL, FIELDVAULT_REDIS_PREFIX: redisPrefix });

beforeAll(() => readySodium());

describe.each(BACKENDS)("HSM root key on %s", (backend: Backend) => {
  let hsm: SoftHsm;
  let keyId: string;
  let db: TestDatabase | undefined;
  let v: ChildVault | undefined;
  const redisPrefix = newRedisPrefix();
  const start = (env: Record<string, string>) =>
    startChildVault({ ...env, ...(db ? pgEnv(db, redisPrefix) : { FIELDVAULT_DATA_DIR: path.join(hsm.dir, "data") }) });

  beforeAll(async () => {
    hsm = createSoftHsm();
    keyId = hsm.createKey("root-1");
    if (backend === "postgres") db = await createTestDatabase();
  });
  afterAll(async () => {
    await v?.stop();
    await db?.drop();
    await dropRedisPrefix(redisPrefix);
    hsm?.cleanup();
  });

  it("tokenizes and reveals with every KEK and the fingerprint key wrapped inside the module; a restart reveals the same", async () => {
    expect(keyId).toMatch(/^pkcs11:[0-9a-f]{16}$/);
    v = await start(hsm.env("root-1"));
    const cards = await pay(v.clients).tokenize({ fields: CARDS.map((value) => ({ category: "card_number", value })), ttlSeconds: 0, subjectRef: "" });
    const passport = await book(v.clients).tokenize({ fields: [{ category: "passport_number", value: "XK1234567" }], ttlSeconds: 0, subjectRef: "" });
    const tokens = cards.tokens.map((x) => x.token);
    expect(await revealCards(v.clients, tokens)).toEqual([
      { $case: "value", value: "4111111111111111" },
      { $case: "value", value: "5555555555554444" },
    ]);
    expect(v.output.some((l) => l.includes("not in an HSM"))).toBe(false);
    expect(v.output.some((l) => l.includes('"msg":"root keys loaded"') && l.includes(`"active":"${keyId}"`))).toBe(true);
    if (db) {
      expect(await rootIds(db)).toEqual({ keks: [keyId], secrets: [keyId] });
      // Each stored KEK is the module's AES-GCM blob: format byte 0x02 ‖ 12-byte IV ‖ 32-byte key ‖ 16-byte tag.
      const blobs = await query<{ w: Buffer }>(db, "SELECT wrapped_key AS w FROM kek_versions");
      expect(blobs.length).toBeGreaterThan(5);
      for (const { w } of blobs) {
        expect(w[0]).toBe(FORMAT_PKCS11_AES_GCM);
        expect(w.length).toBe(1 + 12 + 32 + 16);
      }
      expect(new Set(blobs.map((r) => r.w.subarray(1, 13).toString("hex"))).size).toBe(blobs.length);
    }
    await v.stop();

    v = await start(hsm.env("root-1"));
    expect(await revealCards(v.clients, tokens)).toEqual([
      { $case: "value", value: "4111111111111111" },
      { $case: "value", value: "5555555555554444" },
    ]);
    const pp = await book(v.clients).detokenize({ tokens: [passport.tokens[0]!.token], purpose: "airline_manifest", justification: "" });
    expect(pp.results[0]!.outcome).toEqual({ $case: "value", value: "XK1234567" });
    // The fingerprint key came back from the module intact: the same PAN finds its token.
    const again = await pay(v.clients).tokenize({ fields: [{ category: "card_number", value: "4111-1111-1111-1111" }], ttlSeconds: 0, subjectRef: "" });
    expect(again.tokens[0]!.token).toBe(tokens[0]);
    // A category rotation wraps its new KEK in the module too, and the new version encrypts.
    expect((await admin(v.clients).rotate("card_number")).activeVersion).toBe(2);
    const fresh = await pay(v.clients).tokenize({ fields: [{ category: "card_number", value: "3782 822463 10005" }], ttlSeconds: 0, subjectRef: "" });
    expect(await revealCards(v.clients, [fresh.tokens[0]!.token])).toEqual([{ $case: "value", value: "378282246310005" }]);
    if (db) {
      const v2 = await query<{ r: string; w: Buffer }>(db, "SELECT root_key_id AS r, wrapped_key AS w FROM kek_versions WHERE category = 'card_number' AND version = 2");
      expect(v2[0]!.r).toBe(keyId);
      expect(v2[0]!.w[0]).toBe(FORMAT_PKCS11_AES_GCM);
    }
    // The SDK example a newcomer runs works unchanged against the HSM-backed vault.
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FIELDVAULT_") && k !== "NODE_OPTIONS"));
    const example = spawnSync(process.execPath, ["--import", "tsx", fromRoot("examples", "payment-checkout.ts")], {
      cwd: fromRoot(),
      env: { ...clean, FIELDVAULT_ADDRESS: v.address },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(example.stderr).not.toContain("FAILED");
    expect(example.status).toBe(0);
    expect(example.stdout).toMatch(/: OK$/m);
    await v.stop();
    v = undefined;
  });
});

describe("rotation between providers (PostgreSQL): file → HSM → another HSM key → file", () => {
  let hsm: SoftHsm;
  let db: TestDatabase;
  let v: ChildVault | undefined;
  const redisPrefix = newRedisPrefix();
  beforeAll(async () => {
    hsm = createSoftHsm();
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await v?.stop();
    await db?.drop();
    await dropRedisPrefix(redisPrefix);
    hsm?.cleanup();
  });
  const start = (env: Record<string, string>) => startChildVault({ ...env, ...pgEnv(db, redisPrefix) });

  it("moves every KEK and the fingerprint key between providers; each restart with only the new provider reveals every token", async () => {
    const keyFile = (name: string) => {
      const key = randomBytes(32);
      const file = path.join(hsm.dir, name);
      writeFileSync(file, key.toString("base64") + "\n", { mode: 0o600 });
      return { file, id: rootKeyId(new Uint8Array(key)) };
    };
    const oldFile = keyFile("old-root.key");
    const backFile = keyFile("back-root.key");
    const hsm1 = hsm.createKey("root-1");
    const hsm2 = hsm.createKey("root-2");
    expect(hsm2).not.toBe(hsm1);
    const fileOnly = (f: string) => ({ FIELDVAULT_ROOT_KEY_PROVIDER: "file", FIELDVAULT_ROOT_KEY_FILE: f });

    // A deployment that has run on a file key.
    v = await start(fileOnly(oldFile.file));
    const cards = await pay(v.clients).tokenize({ fields: CARDS.map((value) => ({ category: "card_number", value })), ttlSeconds: 0, subjectRef: "" });
    await admin(v.clients).rotate("card_number");
    const third = await pay(v.clients).tokenize({ fields: [{ category: "card_number", value: "3782 822463 10005" }], ttlSeconds: 0, subjectRef: "" });
    await v.stop();
    const tokens = [...cards.tokens, ...third.tokens].map((x) => x.token);
    const values = [
      { $case: "value", value: "4111111111111111" },
      { $case: "value", value: "5555555555554444" },
      { $case: "value", value: "378282246310005" },
    ];
    expect(await rootIds(db)).toEqual({ keks: [oldFile.id], secrets: [oldFile.id] });
    const live = (await query<{ n: number }>(db, "SELECT count(*)::int AS n FROM kek_versions"))[0]!.n;

    const step = async (env: Record<string, string>, target: string) => {
      v = await start(env);
      const res = await admin(v.clients).rotateRoot(target);
      expect(res).toEqual({ rootKeyId: target, keksRewrapped: live });
      expect(await rootIds(db)).toEqual({ keks: [target], secrets: [target] });
      expect(await revealCards(v.clients, tokens)).toEqual(values);
      await v.stop();
    };
    const restartOnly = async (env: Record<string, string>) => {
      v = await start(env);
      expect(await revealCards(v.clients, tokens)).toEqual(values);
      const again = await pay(v.clients).tokenize({ fields: [{ category: "card_number", value: CARDS[0]! }], ttlSeconds: 0, subjectRef: "" });
      expect(again.tokens[0]!.token).toBe(tokens[0]);
      await v.stop();
    };
    const refused = (env: Record<string, string>) => {
      const r = refusedStart({ ...env, ...pgEnv(db, redisPrefix) });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/root key \S+ is not provided/);
    };

    // 1. file → HSM: provider pkcs11, the old file key loaded unwrap-only beside it.
    await step(hsm.env("root-1", { FIELDVAULT_ROOT_KEY_FILE: oldFile.file }), hsm1);
    await restartOnly(hsm.env("root-1"));
    refused(fileOnly(oldFile.file));

    // 2. HSM key → another HSM key: two labels, the first active, the second unwrap-only.
    await step(hsm.env("root-2,root-1"), hsm2);
    await restartOnly(hsm.env("root-2"));
    refused(hsm.env("root-1"));

    // 3. HSM → file: provider file, the PKCS#11 settings loaded unwrap-only beside it.
    await step({ ...hsm.env("root-2"), ...fileOnly(backFile.file) }, backFile.id);
    await restartOnly(fileOnly(backFile.file));
    refused(hsm.env("root-2"));
    v = undefined;

    const log = await query<{ detail: string }>(db, "SELECT detail FROM access_log WHERE action = 'root_rotate' ORDER BY seq");
    expect(log.map((r) => r.detail)).toEqual([
      `root=${hsm1} previous=${oldFile.id} keks_rewrapped=${live} secrets_rewrapped=2`,
      `root=${hsm2} previous=${hsm1} keks_rewrapped=${live} secrets_rewrapped=2`,
      `root=${backFile.id} previous=${hsm2} keks_rewrapped=${live} secrets_rewrapped=2`,
    ]);
  });
});

describe("the root key object in the token", () => {
  let hsm: SoftHsm;
  let id: string;
  beforeAll(() => {
    hsm = createSoftHsm();
    id = hsm.createKey("root-1");
  });
  afterAll(() => hsm?.cleanup());

  it("is reported by OpenSC's pkcs11-tool as a sensitive, never-extractable AES-256 key without a readable value", () => {
    const listing = hsm.pkcs11Tool("--list-objects", "--type", "secrkey");
    expect(listing).toMatch(/Secret Key Object; AES length 32/);
    expect(listing).toMatch(/label:\s+root-1/);
    expect(listing).toMatch(/Access:\s+sensitive, always sensitive, never extractable/);
    expect(listing).not.toMatch(/VALUE:/);
  });

  it("resists a logged-in attacker (value, attributes, wrapping it out) and wraps with fresh IVs, refusing tampered blobs with the one opaque error", () => {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FIELDVAULT_") && k !== "NODE_OPTIONS"));
    const r = spawnSync(process.execPath, ["--import", "tsx", fromRoot("test", "helpers", "pkcs11-probe.ts"), "root-1"], {
      cwd: fromRoot(),
      env: { ...clean, ...hsm.env("root-1") },
      encoding: "utf8",
      timeout: 60_000,
    });
    expect(r.stderr).toBe("");
    const { attacker, rootKey } = JSON.parse(r.stdout) as { attacker: Record<string, unknown>; rootKey: Record<string, unknown> };
    expect(attacker).toEqual({
      objects: 1,
      class: "secret",
      keyType: "AES",
      valueLen: 32,
      sensitive: true,
      extractable: false,
      alwaysSensitive: true,
      neverExtractable: true,
      token: true,
      readValue: "CKR_ATTRIBUTE_SENSITIVE",
      makeExtractable: expect.stringMatching(/^CKR_/),
      makeNotSensitive: expect.stringMatching(/^CKR_/),
      wrapOut: "CKR_KEY_UNEXTRACTABLE",
    });
    expect(rootKey).toEqual({
      id,
      format: FORMAT_PKCS11_AES_GCM,
      length: 1 + 12 + 32 + 16,
      freshIv: true,
      roundTrip: "opened",
      tampered: { tag: "OpenError", iv: "OpenError", ciphertext: "OpenError", truncated: "OpenError", otherAad: "OpenError", otherFormat: "OpenError", empty: "OpenError" },
      afterRefusals: "opened",
      concurrentOk: 50,
    });
  });
});

describe("production mode", () => {
  let hsm: SoftHsm;
  let db: TestDatabase;
  const redisPrefix = newRedisPrefix();
  beforeAll(async () => {
    hsm = createSoftHsm();
    hsm.createKey("root-1");
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
    await dropRedisPrefix(redisPrefix);
    hsm?.cleanup();
  });

  const production = () => {
    const signingKeyFile = path.join(hsm.dir, "signing.key");
    writeFileSync(signingKeyFile, randomBytes(32).toString("base64") + "\n", { mode: 0o600 });
    // The test CA and server certificate are keys-dev/ material: production refuses them unless told.
    return { FIELDVAULT_MODE: "production", FIELDVAULT_ALLOW_DEV_MATERIAL: "true", FIELDVAULT_SIGNING_KEY_FILE: signingKeyFile, ...TLS_ENV, ...pgEnv(db, redisPrefix) };
  };
  const warnings = (v: ChildVault) =>
    v.output
      .map((l) => JSON.parse(l) as { level: number | string; msg: string })
      .filter((l) => (l.level === "warn" || l.level === 40) && l.msg.includes("not in an HSM"));

  it("warns once at start-up, citing PCI DSS 3.6.1.2 and DESIGN §12, when the root key is an env or file key", async () => {
    const v = await startChildVault({ ...production(), FIELDVAULT_ROOT_KEY: randomBytes(32).toString("base64") });
    try {
      const w = warnings(v);
      expect(w).toHaveLength(1);
      expect(w[0]!.msg).toMatch(/PCI DSS 3\.6\.1\.2/);
      expect(w[0]!.msg).toMatch(/DESIGN §12/);
    } finally {
      await v.stop();
    }
  });

  it("starts on the HSM alone (no file or env key) without that warning, and serves a mutual-TLS caller", async () => {
    await db.drop();
    db = await createTestDatabase();
    const v = await startChildVault({ ...production(), ...hsm.env("root-1") });
    const c = clients(v.address, clientCredentials("payment-service"));
    try {
      expect(warnings(v)).toHaveLength(0);
      const { tokens } = await tokenApi(c, undefined).tokenize({ fields: [{ category: "card_number", value: CARDS[0]! }], ttlSeconds: 0, subjectRef: "" });
      const { results } = await tokenApi(c, undefined).detokenize({ tokens: [tokens[0]!.token], purpose: "payment_authorization", justification: "" });
      expect(results[0]!.outcome).toEqual({ $case: "value", value: "4111111111111111" });
    } finally {
      c.close();
      await v.stop();
    }
  });
});
