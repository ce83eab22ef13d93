import { execFile } from "node:child_process";
import path from "node:path";
import { fromRoot } from "../../src/config/paths";
import { tokenApi } from "../helpers/client";
import { startTestVault, type TestVault } from "../helpers/vault";

const TSX = fromRoot("node_modules", ".bin", "tsx");
const MAIN = path.join("src", "cli", "main.ts");

/** Runs `fieldvault …` (the real CLI, via tsx) and returns its exit code and output. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(TSX, [MAIN, ...args], { cwd: fromRoot(), timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe("fieldvault keys (CLI) against a real vault", () => {
  jest.setTimeout(120_000);
  let t: TestVault;
  const as = (caller: string) => ["--address", t.vault.address, "--caller", caller];

  beforeAll(async () => {
    t = await startTestVault("postgres");
    const api = tokenApi(t.clients, "payment-service");
    await api.tokenize({ fields: ["Cli One", "Cli Two", "Cli Three"].map((value) => ({ category: "cardholder_name", value })), ttlSeconds: 0, subjectRef: "" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("lists, rotates, rewraps (with a rate), retires and destroys with two administrators", async () => {
    const list = await cli(["keys", "list", ...as("sec-admin-1")]);
    expect(list.stderr).toBe("");
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^CATEGORY\s+VERSION\s+STATE\s+CREATED\s+AGE\s+TOKENS\s+CRYPTOPERIOD/);
    expect(list.stdout).toMatch(/cardholder_name\s+v1\s+active\s+\S+\s+0m\s+3\s+ok \(365d\)/);
    expect(list.stdout).toMatch(/card_cvv\s+v1\s+active/);

    const rotate = await cli(["keys", "rotate", "cardholder_name", ...as("sec-admin-1")]);
    expect(rotate.code).toBe(0);
    expect(rotate.stdout).toContain("cardholder_name: active version is now v2 (v1 is decrypt_only)");

    const rewrap = await cli(["keys", "rewrap", "cardholder_name", "--batch-size", "2", ...as("sec-admin-1")]);
    expect(rewrap.code).toBe(0);
    expect(rewrap.stdout).toMatch(/cardholder_name: rewrapped 3 data keys in [\d.]+s \(\d+\/s\); 0 remaining/);
    expect(rewrap.stderr).toMatch(/rewrap: 3\/3 \(100%\) \d+\/s/); // not a TTY: plain progress lines

    const json = await cli(["keys", "list", "cardholder_name", "--json", ...as("sec-admin-2")]);
    const parsed = JSON.parse(json.stdout) as { categories: { activeVersion: number; versions: { version: number; tokens: number }[] }[] };
    expect(parsed.categories[0]!.activeVersion).toBe(2);
    expect(parsed.categories[0]!.versions.map((v) => [v.version, v.tokens])).toEqual([
      [1, 0],
      [2, 3],
    ]);

    const disable = await cli(["keys", "state", "cardholder_name", "1", "disabled", ...as("sec-admin-2")]);
    expect(disable.stdout.trim()).toBe("cardholder_name v1: disabled");

    const request = await cli(["keys", "destroy", "cardholder_name", "1", ...as("sec-admin-1")]);
    expect(request.code).toBe(0);
    const approvalId = /approval id (dr_[A-Za-z0-9_-]+)/.exec(request.stdout)?.[1];
    expect(approvalId).toBeDefined();
    expect(request.stdout).toContain(`fieldvault keys approve cardholder_name 1 ${approvalId}`);

    const self = await cli(["keys", "approve", "cardholder_name", "1", approvalId!, ...as("sec-admin-1")]);
    expect(self.code).toBe(1);
    expect(self.stderr).toContain("second key administrator");

    const approve = await cli(["keys", "approve", "cardholder_name", "1", approvalId!, ...as("sec-admin-2")]);
    expect(approve.code).toBe(0);
    expect(approve.stdout.trim()).toBe("DESTROYED: cardholder_name v1");
    const row = await t.vault.db.query<{ state: string; wrapped_key: Buffer | null }>(
      "SELECT state, wrapped_key FROM kek_versions WHERE category = 'cardholder_name' AND version = 1",
      [],
    );
    expect(row.rows).toEqual([{ state: "destroyed", wrapped_key: null }]);
  });

  it("refuses a caller that is not a key administrator, with a clear message and exit code 1", async () => {
    const r = await cli(["keys", "rotate", "card_number", ...as("payment-service")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("fieldvault: payment-service is not a key administrator");
    expect(r.stdout).toBe("");
  });
});
