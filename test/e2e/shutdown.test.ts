import { type ChildProcess, spawn } from "node:child_process";
import { createServer, connect as tcpConnect } from "node:net";
import { status } from "@grpc/grpc-js";
import pg from "pg";
import { fromRoot } from "../../src/config/paths";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { clients, codeOf, tokenApi } from "../helpers/client";

const until = async (what: () => boolean | Promise<boolean>, timeoutMs = 30000, label = "condition") => {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await what()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${label}: not reached in time`);
};

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

interface Proc {
  child: ChildProcess;
  out: string[];
  exited: Promise<number | null>;
}

/** The real process entry point (src/main.ts via tsx), as a container would run it. */
function spawnVault(env: Record<string, string>): Proc {
  const child = spawn(process.execPath, ["--import", "tsx", fromRoot("src", "main.ts")], {
    cwd: fromRoot(),
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: string[] = [];
  child.stdout!.on("data", (d) => out.push(...String(d).split("\n").filter(Boolean)));
  child.stderr!.on("data", (d) => out.push(...String(d).split("\n").filter(Boolean)));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, out, exited };
}

describe("graceful shutdown of the real process", () => {
  let db: TestDatabase;
  let prefix: string;
  let proc: Proc | undefined;
  let lock: pg.Client | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    prefix = newRedisPrefix();
  });
  afterAll(async () => {
    await lock?.query("ROLLBACK").catch(() => undefined);
    await lock?.end().catch(() => undefined);
    if (proc && proc.child.exitCode === null) proc.child.kill("SIGKILL");
    await db?.drop();
    await dropRedisPrefix(prefix);
  });

  it("on SIGTERM finishes in-flight calls, refuses new connections, seals the log and exits 0", async () => {
    const port = await freePort();
    proc = spawnVault({
      FIELDVAULT_LISTEN: `127.0.0.1:${port}`,
      FIELDVAULT_DATABASE_URL: db.url,
      FIELDVAULT_REDIS_URL: REDIS_URL,
      FIELDVAULT_REDIS_PREFIX: prefix,
      FIELDVAULT_METRICS_LISTEN: "off",
      FIELDVAULT_DB_POOL_SIZE: "48",
      FIELDVAULT_SHUTDOWN_GRACE_MS: "30000",
      // Only shutdown should seal the chain in this test.
      FIELDVAULT_CHECKPOINT_EVERY: "1000000",
      FIELDVAULT_CHECKPOINT_INTERVAL_MS: "3600000",
    });
    await until(() => proc!.out.some((l) => l.includes("fieldvault listening")), 60000, "vault start");

    const c = clients(`127.0.0.1:${port}`);
    const pay = tokenApi(c, "payment-service");
    const { tokens } = await pay.tokenize({
      fields: [{ category: "card_number", value: "4111111111111111" }, { category: "cardholder_name", value: "Drain Test" }],
      ttlSeconds: 0,
      subjectRef: "",
    });
    const wanted = tokens.map((t) => t.token);

    // Hold the tokens table: every call of the burst waits on it (their lookups share one batched
    // query). A last Tokenize on the same connection is dispatched after all of them; once its
    // commit also waits on the lock, every call of the burst has been accepted and is in flight.
    lock = new pg.Client({ connectionString: db.url });
    await lock.connect();
    await lock.query("BEGIN");
    await lock.query("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE");
    const BURST = 30;
    const burst = Array.from({ length: BURST }, (_, i) =>
      pay.detokenize({ tokens: wanted, purpose: "payment_authorization", justification: `DRAIN-${i}` }).then(
        (r) => ({ ok: true as const, r }),
        (err: { code: number }) => ({ ok: false as const, code: err.code }),
      ),
    );
    const marker = pay.tokenize({ fields: [{ category: "cardholder_name", value: "Last In" }], ttlSeconds: 0, subjectRef: "" });
    const waiting = async () =>
      (await lock!.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND relation = 'tokens'::regclass")).rows[0]!.n;
    await until(async () => (await waiting()) === 2, 30000, "the burst and the last call waiting on PostgreSQL");

    proc.child.kill("SIGTERM");
    await until(() => proc!.out.some((l) => l.includes('"signal":"SIGTERM"')), 10000, "shutdown begins");

    // New connections are refused while the in-flight calls are still waiting.
    await until(
      () =>
        new Promise<boolean>((resolve) => {
          const s = tcpConnect(port, "127.0.0.1");
          s.once("connect", () => {
            s.destroy();
            resolve(false);
          });
          s.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
        }),
      10000,
      "listener closed",
    );
    const late = clients(`127.0.0.1:${port}`);
    expect((await codeOf(tokenApi(late, "payment-service").inspect({ tokens: wanted }))).code).toBe(status.UNAVAILABLE);
    late.close();
    expect(await waiting()).toBe(2);
    expect(proc.child.exitCode).toBeNull();

    // Release PostgreSQL: every in-flight call completes with its values.
    await lock.query("ROLLBACK");
    const results = await Promise.all(burst);
    for (const r of results) {
      expect(r.ok).toBe(true);
      if (r.ok) expect(r.r.results.map((x) => x.outcome)).toEqual([{ $case: "value", value: "4111111111111111" }, { $case: "value", value: "Drain Test" }]);
    }
    expect((await marker).tokens).toHaveLength(1);
    c.close();
    expect(await proc.exited).toBe(0);
    expect(proc.out.some((l) => l.includes("fieldvault stopped"))).toBe(true);

    // The access log holds every reveal, and the chain was sealed by a final signed checkpoint.
    const q = (sql: string) => lock!.query(sql).then((r) => r.rows);
    const [{ n }] = (await q("SELECT count(*)::int AS n FROM access_log WHERE action = 'detokenize' AND justification LIKE 'DRAIN-%'")) as { n: number }[];
    expect(n).toBe(BURST * 2);
    const heads = (await q("SELECT chain_id, max(chain_seq)::int AS seq FROM access_log GROUP BY chain_id")) as { chain_id: string; seq: number }[];
    expect(heads).toHaveLength(1);
    const sealed = (await q(`SELECT max(chain_seq)::int AS seq FROM log_checkpoints WHERE chain_id = '${heads[0]!.chain_id}'`)) as { seq: number | null }[];
    expect(sealed[0]!.seq).toBe(heads[0]!.seq);
  });

  it("refuses to start in production mode without its requirements, naming each variable", async () => {
    const p = spawnVault({ FIELDVAULT_MODE: "production", FIELDVAULT_METRICS_LISTEN: "off" });
    expect(await p.exited).toBe(1);
    const text = p.out.join("\n");
    for (const name of ["FIELDVAULT_DATABASE_URL", "FIELDVAULT_REDIS_URL", "FIELDVAULT_TLS_*", "FIELDVAULT_ROOT_KEY", "FIELDVAULT_SIGNING_KEY_FILE"]) expect(text).toContain(name);
    expect(text).not.toContain("fieldvault listening");
  });
});
