import { type ChildProcess, spawn } from "node:child_process";
import { fromRoot } from "../../../src/config/paths";
import { clients, type Clients } from "../../helpers/client";
import { waitFor } from "./ports";

export interface ChildVault {
  proc: ChildProcess;
  address: string;
  clients: Clients;
  /** Every stdout/stderr line (JSON logs) the process wrote. */
  output: string[];
  /** SIGKILL, then waits for the process to be gone. */
  kill9(): Promise<void>;
  /** SIGTERM and wait (graceful). */
  stop(): Promise<void>;
}

function spawnVault(env: Record<string, string>): ChildProcess {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("FIELDVAULT_") && k !== "NODE_OPTIONS"));
  return spawn(process.execPath, ["--import", "tsx", fromRoot("src", "main.ts")], {
    cwd: fromRoot(),
    env: { ...clean, FIELDVAULT_LISTEN: "127.0.0.1:0", FIELDVAULT_METRICS_LISTEN: "off", FIELDVAULT_LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Runs the real entry point expecting it to refuse to start: its exit code and everything it wrote. */
export async function runChildVaultToExit(env: Record<string, string>, timeoutMs = 45_000): Promise<{ code: number | null; output: string }> {
  const proc = spawnVault(env);
  let output = "";
  proc.stdout!.on("data", (c: Buffer) => (output += c.toString()));
  proc.stderr!.on("data", (c: Buffer) => (output += c.toString()));
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((r) => proc.once("exit", (c) => r(c)));
  clearTimeout(timer);
  return { code, output };
}

/** Runs the real entry point (`src/main.ts` via tsx) as a separate process, configured only by environment. */
export async function startChildVault(env: Record<string, string>, opts: { startTimeoutMs?: number } = {}): Promise<ChildVault> {
  const proc = spawnVault(env);
  const output: string[] = [];
  let buffered = "";
  const onData = (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    output.push(...lines.filter(Boolean));
  };
  proc.stdout!.on("data", onData);
  proc.stderr!.on("data", onData);
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const address = await waitFor(
    "the child vault to listen",
    () => {
      if (proc.exitCode !== null) throw new Error(`vault exited with ${proc.exitCode}: ${output.slice(-5).join("\n")}`);
      for (const l of output) {
        try {
          const j = JSON.parse(l) as { msg?: string; address?: string };
          if (j.msg === "fieldvault listening" && j.address) return j.address;
        } catch {
          /* not JSON */
        }
      }
      return undefined;
    },
    opts.startTimeoutMs ?? 45_000,
    50,
  );
  const c = clients(address);
  return {
    proc,
    address,
    clients: c,
    output,
    async kill9() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      await exited;
      c.close();
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
      await exited;
      c.close();
    },
  };
}
