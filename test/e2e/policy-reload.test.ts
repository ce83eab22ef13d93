import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import YAML from "yaml";
import { fromRoot } from "../../src/config/paths";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { codeOf, tokenApi } from "../helpers/client";
import { type ChildVault, startChildVault } from "../reliability/helpers/child-vault";
import { waitFor } from "../reliability/helpers/ports";

/** SIGHUP reloads the policy file in the real process; a bad file leaves the old policy in force. */
describe("policy reload on SIGHUP (real process)", () => {
  let db: TestDatabase;
  let dir: string;
  let vault: ChildVault;
  const prefix = newRedisPrefix();
  const policyFile = () => join(dir, "policy.yaml");
  const email = { fields: [{ category: "email", value: "reload@example.com" }], ttlSeconds: 0, subjectRef: "" };

  beforeAll(async () => {
    db = await createTestDatabase();
    dir = mkdtempSync(join(tmpdir(), "fv-policy-"));
    writeFileSync(policyFile(), readFileSync(fromRoot("policy", "default.yaml")));
    vault = await startChildVault({
      FIELDVAULT_DATABASE_URL: db.url,
      FIELDVAULT_REDIS_URL: REDIS_URL,
      FIELDVAULT_REDIS_PREFIX: prefix,
      FIELDVAULT_POLICY_FILE: policyFile(),
    });
  }, 90_000);
  afterAll(async () => {
    await vault?.stop();
    await db?.drop();
    await dropRedisPrefix(prefix);
    rmSync(dir, { recursive: true, force: true });
  });

  it("applies a valid new file, and keeps it when the next file is invalid", async () => {
    const pay = tokenApi(vault.clients, "payment-service");
    expect((await codeOf(pay.tokenize(email))).code).toBe(status.PERMISSION_DENIED);

    const doc = YAML.parse(readFileSync(policyFile(), "utf8"));
    doc.callers["payment-service"].tokenize.push("email");
    writeFileSync(policyFile(), YAML.stringify(doc));
    vault.proc.kill("SIGHUP");
    await waitFor("the reloaded policy", async () => ((await pay.tokenize(email).then(() => true, () => false)) ? true : undefined), 10_000, 100);

    writeFileSync(policyFile(), "callers: { payment-service: { tokenize: [shoe_size] } }\n");
    vault.proc.kill("SIGHUP");
    await waitFor("the refusal in the log", () => (vault.output.some((l) => l.includes("policy reload refused")) ? true : undefined), 10_000, 50);
    const refusal = JSON.parse(vault.output.find((l) => l.includes("policy reload refused"))!);
    expect(JSON.stringify(refusal.problems)).toContain("purposes");
    const { tokens } = await pay.tokenize(email); // the previous (valid) policy is still in force
    expect(tokens[0]!.category).toBe("email");
  });
});
