import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import YAML from "yaml";
import { fromRoot } from "../../src/config/paths";
import { clients, codeOf, tokenApi } from "../helpers/client";
import { waitFor } from "../reliability/helpers/ports";

interface NpmStart {
  npm: ChildProcess;
  output: string[];
  exited: Promise<number | null>;
  address: string;
  vaultPid: number;
}

/** Runs the README's `npm start` exactly as a user would, in this checkout, on a free port. */
async function npmStart(env: Record<string, string>): Promise<NpmStart> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FIELDVAULT_") && !k.startsWith("npm_") && k !== "NODE_OPTIONS"));
  const npm = spawn("npm", ["start"], {
    cwd: fromRoot(),
    env: { ...clean, FIELDVAULT_LISTEN: "127.0.0.1:0", FIELDVAULT_METRICS_LISTEN: "off", FIELDVAULT_DATA_DIR: "memory://", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output: string[] = [];
  let buffered = "";
  const onData = (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    output.push(...lines.filter(Boolean));
  };
  npm.stdout!.on("data", onData);
  npm.stderr!.on("data", onData);
  const exited = new Promise<number | null>((r) => npm.once("exit", (code) => r(code)));
  const json = () => output.flatMap((l) => (l.startsWith("{") ? [JSON.parse(l) as Record<string, unknown>] : []));
  // The first `npm start` of a fresh checkout builds (tsc) before the vault starts.
  const address = await waitFor(
    "npm start to listen",
    () => {
      if (npm.exitCode !== null) throw new Error(`npm start exited with ${npm.exitCode}: ${output.slice(-5).join("\n")}`);
      return json().find((j) => j.msg === "fieldvault listening")?.address as string | undefined;
    },
    150_000,
    100,
  );
  const vaultPid = json().find((j) => typeof j.msg === "string" && j.msg.startsWith("signals:"))?.pid as number;
  return { npm, output, exited, address, vaultPid };
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/**
 * Signals sent to the pid of `npm start` reach the vault: npm 11 forwards SIGTERM (the vault stops
 * gracefully and frees its port); SIGHUP, which npm does not forward, must not leave a vault serving
 * on its own, and SIGHUP to the pid the start-up log prints reloads the policy.
 */
describe("npm start (real npm, real process)", () => {
  let dir: string;
  const started: NpmStart[] = [];
  const policyFile = () => join(dir, "policy.yaml");
  const email = { fields: [{ category: "email", value: "npm-start@example.com" }], ttlSeconds: 0, subjectRef: "" };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "fv-npmstart-"));
    writeFileSync(policyFile(), readFileSync(fromRoot("policy", "default.yaml")));
  });
  afterAll(async () => {
    for (const s of started) {
      if (s.vaultPid && running(s.vaultPid)) process.kill(s.vaultPid, "SIGKILL");
      if (s.npm.exitCode === null) s.npm.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it("SIGTERM to the npm pid stops the vault gracefully and frees its port", async () => {
    const s = await npmStart({ FIELDVAULT_POLICY_FILE: policyFile() });
    started.push(s);
    expect(s.vaultPid).toBeGreaterThan(0);
    expect(parentOf(s.vaultPid)).toBe(s.npm.pid); // npm runs the vault itself: no shell in between
    s.npm.kill("SIGTERM");
    await s.exited;
    await waitFor("the vault to exit", () => !running(s.vaultPid), 15_000, 50);
    expect(s.output.some((l) => l.includes('"msg":"fieldvault stopped"'))).toBe(true);
    expect(await portFree(Number(s.address.split(":").pop()))).toBe(true);
  }, 180_000);

  it("SIGHUP to the printed pid reloads the policy; SIGHUP to npm's pid stops the vault instead of orphaning it", async () => {
    const s = await npmStart({ FIELDVAULT_POLICY_FILE: policyFile() });
    started.push(s);
    const c = clients(s.address);
    const pay = tokenApi(c, "payment-service");
    expect((await codeOf(pay.tokenize(email))).code).toBe(status.PERMISSION_DENIED);
    const doc = YAML.parse(readFileSync(policyFile(), "utf8"));
    doc.callers["payment-service"].tokenize.push("email");
    writeFileSync(policyFile(), YAML.stringify(doc));
    expect(s.output.join("\n")).toContain(`SIGHUP to pid ${s.vaultPid} reloads the policy`);
    process.kill(s.vaultPid, "SIGHUP");
    await waitFor("the reloaded policy", async () => ((await pay.tokenize(email).then(() => true, () => false)) ? true : undefined), 10_000, 100);
    c.close();

    s.npm.kill("SIGHUP");
    await s.exited;
    await waitFor("the vault to exit", () => !running(s.vaultPid), 15_000, 50);
    expect(s.output.join("\n")).toContain(`send SIGHUP to the vault's own pid ${s.vaultPid}`);
    expect(s.output.some((l) => l.includes('"msg":"fieldvault stopped"'))).toBe(true);
    expect(await portFree(Number(s.address.split(":").pop()))).toBe(true);
  }, 180_000);
});
