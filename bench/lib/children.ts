import { type ChildProcess, fork } from "node:child_process";
import { join } from "node:path";
import type { LoadJob, LoadResult } from "../load";

const BENCH_DIR = join(__dirname, "..");

export interface Child {
  proc: ChildProcess;
  address: string;
  /** The vault's /metrics address, when it serves one. */
  metricsAddress?: string;
  stop(): Promise<void>;
}

let bundled: string | undefined;

/**
 * The server script compiled to plain JavaScript (esbuild, dependencies left in node_modules), so
 * the server runs as `node dist/...` would in production: no TypeScript loader in its process
 * (tsx alone adds ~40 MB resident and its own start-up work). Falls back to tsx if esbuild is missing.
 */
function compiled(script: string): { file: string; execArgv: string[] } {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const esbuild = require("esbuild") as typeof import("esbuild");
    bundled ??= join(BENCH_DIR, "results", ".build");
    const out = join(bundled, script.replace(/\.ts$/, ".js"));
    esbuild.buildSync({
      entryPoints: [join(BENCH_DIR, script)],
      outfile: out,
      bundle: true,
      platform: "node",
      target: "node20",
      format: "cjs",
      packages: "external",
      sourcemap: true,
      logLevel: "error",
    });
    return { file: out, execArgv: ["--enable-source-maps"] };
  } catch {
    return { file: join(BENCH_DIR, script), execArgv: ["--import", "tsx"] };
  }
}

/** Starts a bench server (vault or no-op) in its own process; resolves once it listens. */
export function startServer(script: string, env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<Child> {
  const { file, execArgv } = compiled(script);
  return new Promise((resolve, reject) => {
    const proc = fork(file, [], {
      execArgv: [...execArgv, ...nodeArgs],
      env,
      // Server logs (one JSON line a call) are written, as in production, but not kept.
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    const onExit = (code: number | null) => reject(new Error(`${script} exited with ${code} before it was ready`));
    proc.once("exit", onExit);
    proc.once("error", reject);
    proc.once("message", (m: { ready?: boolean; address?: string; metricsAddress?: string }) => {
      if (!m.ready || !m.address) return reject(new Error(`${script}: unexpected message`));
      proc.off("exit", onExit);
      resolve({
        proc,
        address: m.address,
        metricsAddress: m.metricsAddress,
        stop: () =>
          new Promise<void>((done) => {
            if (proc.exitCode !== null || proc.signalCode !== null) return done();
            const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
            proc.once("exit", () => {
              clearTimeout(timer);
              done();
            });
            proc.kill("SIGTERM");
          }),
      });
    });
  });
}

/**
 * Runs one load job in a fresh load-generator process. `onPhase` is called when the measured
 * window opens and closes (with the generator's pid), for CPU accounting from /proc.
 */
export function runLoad(job: LoadJob, onPhase?: (phase: "start" | "end", loadPid: number) => void | Promise<void>): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const proc = fork(join(BENCH_DIR, "load.ts"), [JSON.stringify(job)], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    let result: LoadResult | undefined;
    let phases = Promise.resolve();
    proc.on("message", (m: LoadResult | { phase: "start" | "end" }) => {
      if ("phase" in m) {
        const p = m.phase;
        phases = phases.then(() => onPhase?.(p, proc.pid!));
      } else result = m;
    });
    proc.once("error", reject);
    proc.once("exit", (code) => void phases.then(() => (result ? resolve(result) : reject(new Error(`load generator exited with ${code}`)))));
  });
}
