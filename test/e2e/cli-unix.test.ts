import { execFile } from "node:child_process";
import path from "node:path";
import { fromRoot } from "../../src/config/paths";
import { tokenApi } from "../helpers/client";
import { startTestVault, type TestVault } from "../helpers/vault";
import { TLS_ENV } from "../helpers/tls";

const TSX = fromRoot("node_modules", ".bin", "tsx");
const MAIN = path.join("src", "cli", "main.ts");

function run(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd: fromRoot(), timeout: 90_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}
const cli = (args: string[]) => run(TSX, [MAIN, ...args]);
/** `fieldvault … | head -n 1` in bash with pipefail: the CLI's own exit status, and its stderr. */
const piped = (args: string[]) => run("bash", ["-c", `set -o pipefail; "${TSX}" ${MAIN} ${args.map((a) => `'${a}'`).join(" ")} 2>cli.stderr.$$ | head -n 1 >/dev/null; rc=$?; cat cli.stderr.$$ >&2; rm -f cli.stderr.$$; exit $rc`]);

/** The CLI behaves like a Unix tool: quiet on a closed pipe, escapes what callers wrote, explains connection failures. */
describe("fieldvault CLI as a Unix tool", () => {
  jest.setTimeout(180_000);
  let t: TestVault;
  let tls: TestVault;
  const as = (caller: string) => ["--address", t.vault.address, "--caller", caller];

  beforeAll(async () => {
    t = await startTestVault("embedded");
    const pay = tokenApi(t.clients, "payment-service");
    const { tokens } = await pay.tokenize({ fields: Array.from({ length: 400 }, (_, i) => ({ category: "cardholder_name", value: `Pipe Person ${i}` })), ttlSeconds: 0, subjectRef: "" });
    // 400 log entries, each with a justification carrying a bidi override and a C1 control (CSI).
    await pay.detokenize({ tokens: tokens.map((x) => x.token), purpose: "refund", justification: "order \u202e4321\u202c \u009b31m" });
    tls = await startTestVault("embedded", TLS_ENV);
  });
  afterAll(async () => {
    await t?.stop();
    await tls?.stop();
  });

  it.each([
    ["audit query", ["audit", "query", "--all", "--limit", "1000", "--json"], "ir-analyst"],
    ["audit export", ["audit", "export", "--format", "jsonl"], "ir-analyst"],
    ["keys list", ["keys", "list"], "sec-admin-1"],
  ])("%s | head exits 0 without a stack trace", async (_name, args, caller) => {
    const r = await piped([...args, ...as(caller)]);
    expect(r.stderr).not.toMatch(/EPIPE|Error|at /);
    expect(r.code).toBe(0);
  });

  it("escapes control and bidi characters from the log in the table and in JSON", async () => {
    const table = await cli(["audit", "query", "--action", "detokenize", "--limit", "5", ...as("ir-analyst")]);
    expect(table.code).toBe(0);
    expect(table.stdout).not.toMatch(/[\u202e\u009b]/);
    const json = await cli(["audit", "query", "--action", "detokenize", "--limit", "5", "--json", ...as("ir-analyst")]);
    expect(json.stdout).not.toMatch(/[\u202e\u009b]/);
    // The JSON still parses to exactly what the caller wrote.
    expect(JSON.parse(json.stdout.split("\n")[0]!).justification).toBe("order \u202e4321\u202c \u009b31m");
  });

  it("explains a missing identity, a vault that is down, plaintext against TLS and a CA that does not match", async () => {
    const noId = await cli(["keys", "list", "--address", t.vault.address]);
    expect(noId.code).toBe(1);
    expect(noId.stderr).toMatch(/no identity: .*--caller <identity> \(or FIELDVAULT_CALLER\).*--cert, --key and --ca/);

    const down = await cli(["keys", "list", "--address", "127.0.0.1:1", "--caller", "sec-admin-1"]);
    expect(down.stderr.trim()).toBe("fieldvault: nothing is listening on 127.0.0.1:1 (connection refused): is the vault running (npm start)? Otherwise fix --address (or FIELDVAULT_ADDRESS)");

    const plain = await cli(["keys", "list", "--address", tls.vault.address, "--caller", "sec-admin-1"]);
    expect(plain.stderr).toMatch(/closed the connection before any call: it most likely requires TLS/);

    const k = (f: string) => fromRoot("keys-dev", f);
    const otherCa = await cli(["keys", "list", "--address", tls.vault.address, "--ca", k("other-ca.pem"), "--cert", k("sec-admin-1.pem"), "--key", k("sec-admin-1.key")]);
    expect(otherCa.stderr).toMatch(/is not signed by the CA you trust: give the CA that signed the vault's server certificate with --ca/);

    const tlsToPlain = await cli(["keys", "list", "--address", t.vault.address, "--ca", k("ca.pem"), "--cert", k("sec-admin-1.pem"), "--key", k("sec-admin-1.key")]);
    expect(tlsToPlain.stderr).toMatch(/speaks plaintext, not TLS/);
    // One line each (Node's own deprecation warning about TLS to an IP address aside).
    for (const r of [noId, down, plain, otherCa, tlsToPlain]) expect(r.stderr.trim().split("\n").filter((l) => !/^\((node:\d+|Use `node)/.test(l))).toHaveLength(1);
  });
});
