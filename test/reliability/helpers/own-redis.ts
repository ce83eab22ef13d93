import { type ChildProcess, spawn } from "node:child_process";
import { Redis } from "ioredis";
import { freePort, waitFor } from "./ports";

export interface OwnRedis {
  port: number;
  url: string;
  /** SIGKILL: the server and everything in its memory are gone. */
  kill(): Promise<void>;
  /** Starts a fresh server on the same port; returns once it answers PING. */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: the server keeps its connections but stops answering (a black hole). */
  pause(): void;
  resume(): void;
  destroy(): Promise<void>;
}

/** A redis-server this test owns, on a free port, with no persistence. */
export async function startOwnRedis(): Promise<OwnRedis> {
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let proc: ChildProcess | undefined;

  const start = async () => {
    const p = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore",
    });
    proc = p;
    await waitFor("own Redis to answer PING", async () => {
      if (p.exitCode !== null) throw new Error(`redis-server exited with ${p.exitCode}`);
      const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      r.on("error", () => undefined);
      try {
        await r.connect();
        return (await r.ping()) === "PONG";
      } finally {
        r.disconnect();
      }
    });
  };
  const kill = async () => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise((r) => p.once("exit", r));
    p.kill("SIGCONT");
    p.kill("SIGKILL");
    await exited;
  };
  await start();
  return {
    port,
    url,
    kill,
    start,
    pause: () => void proc?.kill("SIGSTOP"),
    resume: () => void proc?.kill("SIGCONT"),
    destroy: kill,
  };
}
