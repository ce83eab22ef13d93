import { spawn, spawnSync } from "node:child_process";
import { join } from "node:path";

/**
 * The default log destination buffers stdout (observability/logger.ts). What an operator relies on:
 * a line shows up promptly while the process idles, and nothing buffered is lost when the process
 * exits, whether it ends normally, calls process.exit, or dies of an uncaught error.
 */
const logger = join(__dirname, "..", "..", "src", "observability", "logger.ts");
const script = (body: string) => `const { createLogger } = require(${JSON.stringify(logger)}); const log = createLogger("info"); ${body}`;
const run = (body: string) => spawnSync(process.execPath, ["--import", "tsx", "-e", script(body)], { encoding: "utf8", timeout: 20_000 });
const lines = (out: string) => out.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { msg: string; n?: number });

describe("buffered stdout logging", () => {
  it("writes a line within a few flush intervals while the process stays up", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "-e", script(`log.info({ n: 1 }, "first"); setTimeout(() => {}, 20000);`)]);
    try {
      const first = await new Promise<string>((resolve, reject) => {
        let out = "";
        child.stdout.on("data", (d: Buffer) => {
          out += d.toString();
          if (out.includes("\n")) resolve(out);
        });
        child.on("exit", () => reject(new Error("exited before logging")));
        setTimeout(() => reject(new Error("no line within 10 s")), 10_000);
      });
      expect(lines(first)[0]).toMatchObject({ msg: "first", n: 1 });
    } finally {
      child.kill("SIGKILL");
    }
  });

  it.each([
    ["ends normally", ""],
    ["calls process.exit", "process.exit(3);"],
    ["throws an uncaught error", "throw new Error('boom');"],
  ])("keeps every line when the process %s", (_what, end) => {
    const r = run(`for (let n = 0; n < 500; n++) log.info({ n }, "line"); ${end}`);
    const got = lines(r.stdout).filter((l) => l.msg === "line");
    expect(got.map((l) => l.n)).toEqual(Array.from({ length: 500 }, (_, n) => n));
  });
});
