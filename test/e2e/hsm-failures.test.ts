import { renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { credentials as grpcCredentials, loadPackageDefinition, status, type Client, type ServiceError } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import pg from "pg";
import { randomBytes } from "node:crypto";
import { rootKeyId } from "../../src/crypto/root-key";
import { readySodium } from "../../src/crypto/sodium";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { codeOf, tokenApi } from "../helpers/client";
import { keyApi } from "../helpers/key-admin";
import { createSoftHsm, refusedStart, type SoftHsm, USER_PIN } from "../helpers/softhsm";
import { type ChildVault, startChildVault as startChild } from "../reliability/helpers/child-vault";

/** A vault process; PGlite's first start (initdb) and tsx are slow on a loaded CI machine. */
const startChildVault = (env: Record<string, string>) => startChild(env, { startTimeoutMs: 150_000 });

/** DESIGN §12's failures, on SoftHSM2: each start-up problem names its setting (never the PIN); a module failing after start. */
jest.setTimeout(180_000);

const WRONG_PIN = "wrong-pin-48213";

describe("start-up refusals", () => {
  let hsm: SoftHsm;
  beforeAll(() => {
    hsm = createSoftHsm("fv-failures");
    hsm.createKey("root-1");
    // A key that may leave the module: OpenSC makes it extractable and not sensitive.
    hsm.pkcs11Tool("--keygen", "--key-type", "AES:32", "--label", "leaky", "--extractable");
  });
  afterAll(() => hsm?.cleanup());

  const refusal = (env: Record<string, string>) => {
    const r = refusedStart(env);
    expect(r.code).toBe(1);
    for (const pin of [USER_PIN, WRONG_PIN]) {
      expect(r.stderr).not.toContain(pin);
      expect(r.stdout).not.toContain(pin);
    }
    return r.stderr;
  };

  it("refuses a module path that does not exist, or a file that is not a PKCS#11 module, naming FIELDVAULT_PKCS11_LIBRARY", () => {
    expect(refusal(hsm.env("root-1", { FIELDVAULT_PKCS11_LIBRARY: "/nonexistent/libvendor-pkcs11.so" }))).toMatch(
      /FIELDVAULT_PKCS11_LIBRARY: cannot load the PKCS#11 module \/nonexistent\/libvendor-pkcs11\.so/,
    );
    const notAModule = path.join(hsm.dir, "not-a-module.so");
    writeFileSync(notAModule, "this is not a shared object\n");
    expect(refusal(hsm.env("root-1", { FIELDVAULT_PKCS11_LIBRARY: notAModule }))).toMatch(/FIELDVAULT_PKCS11_LIBRARY: cannot load the PKCS#11 module/);
  });

  it("refuses an unknown token label, naming FIELDVAULT_PKCS11_TOKEN_LABEL and the labels it found", () => {
    expect(refusal(hsm.env("root-1", { FIELDVAULT_PKCS11_TOKEN_LABEL: "no-such-token" }))).toMatch(
      /FIELDVAULT_PKCS11_TOKEN_LABEL: no token labelled "no-such-token" .*tokens found: "fv-failures"/,
    );
  });

  it("refuses a wrong PIN, naming FIELDVAULT_PKCS11_PIN or FIELDVAULT_PKCS11_PIN_FILE and never the PIN", () => {
    expect(refusal(hsm.env("root-1", { FIELDVAULT_PKCS11_PIN: WRONG_PIN }))).toMatch(/FIELDVAULT_PKCS11_PIN: token "fv-failures" refused the PIN/);
    const pinFile = path.join(hsm.dir, "pin");
    writeFileSync(pinFile, WRONG_PIN + "\n", { mode: 0o600 });
    const env = hsm.env("root-1", { FIELDVAULT_PKCS11_PIN_FILE: pinFile });
    delete env.FIELDVAULT_PKCS11_PIN;
    expect(refusal(env)).toMatch(/FIELDVAULT_PKCS11_PIN_FILE: token "fv-failures" refused the PIN/);
    expect(refusal({ ...env, FIELDVAULT_PKCS11_PIN_FILE: path.join(hsm.dir, "missing-pin") })).toMatch(/FIELDVAULT_PKCS11_PIN_FILE: cannot read/);
    // The right PIN from a file works.
    writeFileSync(pinFile, USER_PIN + "\n");
    const status = hsm.cli(["hsm", "status"], { FIELDVAULT_PKCS11_PIN_FILE: pinFile, FIELDVAULT_PKCS11_PIN: "", FIELDVAULT_PKCS11_KEY_LABEL: "root-1" });
    expect(status.stderr).toBe("");
    expect(status.code).toBe(0);
  });

  it("refuses a missing key label, even when only an unwrap-only label is missing, naming FIELDVAULT_PKCS11_KEY_LABEL", () => {
    expect(refusal(hsm.env("no-such-key"))).toMatch(/FIELDVAULT_PKCS11_KEY_LABEL: no secret key labelled "no-such-key" in token "fv-failures"/);
    expect(refusal(hsm.env("root-1,retired"))).toMatch(/FIELDVAULT_PKCS11_KEY_LABEL: no secret key labelled "retired"/);
  });

  it("refuses an extractable key, naming FIELDVAULT_PKCS11_KEY_LABEL", () => {
    expect(refusal(hsm.env("leaky"))).toMatch(/FIELDVAULT_PKCS11_KEY_LABEL: key "leaky" is extractable \(CKA_EXTRACTABLE true\)/);
  });

  it("refuses incomplete PKCS#11 settings, listing each missing variable", () => {
    const err = refusal({ FIELDVAULT_ROOT_KEY_PROVIDER: "pkcs11", FIELDVAULT_PKCS11_PIN: WRONG_PIN });
    for (const v of ["FIELDVAULT_PKCS11_LIBRARY", "FIELDVAULT_PKCS11_TOKEN_LABEL", "FIELDVAULT_PKCS11_KEY_LABEL"]) expect(err).toMatch(new RegExp(`${v}: required`));
  });

  it("hsm status reports each problem with its setting and exits non-zero; hsm create-key refuses a label already taken", () => {
    const ok = hsm.cli(["hsm", "status"], { FIELDVAULT_PKCS11_KEY_LABEL: "root-1,leaky,absent" });
    expect(ok.code).toBe(1);
    expect(ok.stdout).toMatch(/module\s+\/usr\/lib\/softhsm\/libsofthsm2\.so: ok/);
    expect(ok.stdout).toMatch(/token\s+"fv-failures": ok \(serial [0-9a-f]+/);
    expect(ok.stdout).toMatch(/login\s+ok/);
    expect(ok.stdout).toMatch(/key\s+"root-1" active: ok, pkcs11:[0-9a-f]{16}/);
    expect(ok.stdout).toMatch(/key\s+"leaky" unwrap only: FAILED: FIELDVAULT_PKCS11_KEY_LABEL: key "leaky" is extractable/);
    expect(ok.stdout).toMatch(/key\s+"absent" unwrap only: FAILED: FIELDVAULT_PKCS11_KEY_LABEL: no secret key labelled "absent"/);
    const badPin = hsm.cli(["hsm", "status"], { FIELDVAULT_PKCS11_KEY_LABEL: "root-1", FIELDVAULT_PKCS11_PIN: WRONG_PIN });
    expect(badPin.code).toBe(1);
    expect(badPin.stdout).toMatch(/login\s+FAILED: FIELDVAULT_PKCS11_PIN: token "fv-failures" refused the PIN/);
    expect(badPin.stdout + badPin.stderr).not.toContain(WRONG_PIN);
    const json = JSON.parse(hsm.cli(["hsm", "status", "--json"], { FIELDVAULT_PKCS11_KEY_LABEL: "root-1" }).stdout) as { ok: boolean; keys: { label: string; active: boolean; id: string }[] };
    expect(json.ok).toBe(true);
    expect(json.keys).toEqual([expect.objectContaining({ label: "root-1", active: true, id: expect.stringMatching(/^pkcs11:/) })]);
    const dup = hsm.cli(["hsm", "create-key", "--label", "root-1"]);
    expect(dup.code).toBe(1);
    expect(dup.stderr).toMatch(/already has a key labelled "root-1"/);
  });
});

/** A Health client the way grpc_health_probe builds one. */
function healthCheck(address: string): Promise<string> {
  const def = loadSync("health/v1/health.proto", { keepCase: true, enums: String, defaults: true, includeDirs: [path.resolve(path.dirname(healthProtoPath), "..", "..")] });
  const Ctor = (loadPackageDefinition(def) as any).grpc.health.v1.Health as new (a: string, c: ReturnType<typeof grpcCredentials.createInsecure>) => Client & Record<string, Function>;
  const client = new Ctor(address, grpcCredentials.createInsecure());
  return new Promise<string>((resolve, reject) =>
    client.Check({ service: "" }, { deadline: Date.now() + 5000 }, (err: ServiceError | null, res: { status: string }) => {
      client.close();
      return err ? reject(err) : resolve(res.status);
    }),
  );
}

describe("the module failing after start (its token's folder taken away under the running vault), then coming back", () => {
  let hsm: SoftHsm;
  let db: TestDatabase;
  let v: ChildVault | undefined;
  const redisPrefix = newRedisPrefix();
  beforeAll(async () => {
    await readySodium();
    hsm = createSoftHsm("fv-outage");
    hsm.createKey("root-1");
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await v?.stop();
    await db?.drop();
    await dropRedisPrefix(redisPrefix);
    hsm?.cleanup();
  });

  const snapshot = async () => {
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    try {
      const keks = await c.query("SELECT category, version, state, root_key_id, encode(wrapped_key, 'hex') AS w FROM kek_versions ORDER BY 1, 2");
      const secrets = await c.query("SELECT name, root_key_id, encode(wrapped, 'hex') AS w FROM vault_secrets ORDER BY 1");
      return { keks: keks.rows, secrets: secrets.rows };
    } finally {
      await c.end();
    }
  };

  it("keeps revealing from the KEKs in memory and stays SERVING; RotateRootKey and RotateKey answer UNAVAILABLE and change nothing; once the token is back, rotation works without a restart", async () => {
    const newKey = randomBytes(32);
    const keyFile = path.join(hsm.dir, "new-root.key");
    writeFileSync(keyFile, newKey.toString("base64") + "\n", { mode: 0o600 });
    const fileId = rootKeyId(new Uint8Array(newKey));
    v = await startChildVault({
      ...hsm.env("root-1", { FIELDVAULT_ROOT_KEY_FILE: keyFile }),
      FIELDVAULT_DATABASE_URL: db.url,
      FIELDVAULT_REDIS_URL: REDIS_URL,
      FIELDVAULT_REDIS_PREFIX: redisPrefix,
      FIELDVAULT_HEALTH_INTERVAL_MS: "200",
    });
    const pay = tokenApi(v.clients, "payment-service");
    const admin = keyApi(v.clients, "sec-admin-1");
    const { tokens } = await pay.tokenize({ fields: [{ category: "card_number", value: "4111 1111 1111 1111" }, { category: "cardholder_name", value: "Ada Lovelace" }], ttlSeconds: 0, subjectRef: "" });
    const before = await snapshot();

    // The module fails: the token's folder is gone (as a removed smart card or a dead HSM link).
    const away = `${hsm.tokenDir}.away`;
    renameSync(hsm.tokenDir, away);

    const { results } = await pay.detokenize({ tokens: tokens.map((t) => t.token), purpose: "payment_authorization", justification: "OUTAGE" });
    expect(results.map((r) => r.outcome)).toEqual([
      { $case: "value", value: "4111111111111111" },
      { $case: "value", value: "Ada Lovelace" },
    ]);
    const more = await pay.tokenize({ fields: [{ category: "card_number", value: "5555 5555 5555 4444" }], ttlSeconds: 0, subjectRef: "" });
    const again = await pay.detokenize({ tokens: [more.tokens[0]!.token], purpose: "refund", justification: "" });
    expect(again.results[0]!.outcome).toEqual({ $case: "value", value: "5555555555554444" });

    const root = await codeOf(admin.rotateRoot(fileId));
    expect(root.code).toBe(status.UNAVAILABLE);
    expect(root.details).toMatch(/root key pkcs11:[0-9a-f]{16} unavailable.*nothing was changed/);
    const rotate = await codeOf(admin.rotate("card_number"));
    expect(rotate.code).toBe(status.UNAVAILABLE);
    expect(await snapshot()).toEqual(before);

    // Health watches what serving needs (PostgreSQL, migrations); reveals still work, so it stays SERVING.
    await new Promise((r) => setTimeout(r, 600));
    expect(await healthCheck(v.address)).toBe("SERVING");

    // The refused rotations are in the access log; no line anywhere carries the PIN.
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    const log = await c.query<{ action: string; outcome: string }>("SELECT action, outcome FROM access_log WHERE action IN ('root_rotate', 'key_rotate') ORDER BY seq");
    await c.end();
    expect(log.rows).toEqual([
      { action: "root_rotate", outcome: "unavailable" },
      { action: "key_rotate", outcome: "unavailable" },
    ]);
    expect(v.output.join("\n")).not.toContain(USER_PIN);

    // Meanwhile a restart is refused, naming the module setting (SoftHSM cannot initialise without its folder).
    const env = { ...hsm.env("root-1"), FIELDVAULT_DATABASE_URL: db.url, FIELDVAULT_REDIS_URL: REDIS_URL, FIELDVAULT_REDIS_PREFIX: redisPrefix };
    const r = refusedStart(env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/FIELDVAULT_PKCS11_LIBRARY: the PKCS#11 module \/usr\/lib\/softhsm\/libsofthsm2\.so failed to initialise/);

    // The token comes back: the running vault opens a fresh session (re-initialising the module) and rotates, without a restart.
    renameSync(away, hsm.tokenDir);
    expect(await admin.rotateRoot(fileId)).toEqual({ rootKeyId: fileId, keksRewrapped: before.keks.length });
    const after = await snapshot();
    expect(new Set([...after.keks.map((k) => k.root_key_id), ...after.secrets.map((x) => x.root_key_id)])).toEqual(new Set([fileId]));
    const final = await pay.detokenize({ tokens: [...tokens.map((t) => t.token), more.tokens[0]!.token], purpose: "payment_authorization", justification: "" });
    expect(final.results.map((x) => x.outcome)).toEqual([
      { $case: "value", value: "4111111111111111" },
      { $case: "value", value: "Ada Lovelace" },
      { $case: "value", value: "5555555555554444" },
    ]);
    await v.stop();
    v = undefined;
  });
});
