import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { createPgDb } from "../../src/storage/postgres/pg-db";
import type { Db } from "../../src/storage/db";
import { verifyChains } from "./helpers/chain";
import { type ChildVault, startChildVault } from "./helpers/child-vault";
import { policyFile } from "./helpers/policy-file";
import { waitFor } from "./helpers/ports";
import { codeName, tokens, valuesOf } from "./helpers/rpc";

/**
 * The vault process is SIGKILLed with 64 tokenize calls in flight, then started again on the same
 * database: every acknowledged token opens to its value, every stored row opens to a value that was
 * sent (nothing half-written), and the log chains verify with no gap.
 */
describe("kill -9 under tokenize load", () => {
  let db: TestDatabase;
  let sql: Db;
  const prefix = newRedisPrefix();
  let env: Record<string, string>;
  const children: ChildVault[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    sql = createPgDb({ url: db.url, poolSize: 2 });
    env = {
      FIELDVAULT_DATABASE_URL: db.url,
      FIELDVAULT_REDIS_URL: REDIS_URL,
      FIELDVAULT_REDIS_PREFIX: prefix,
      FIELDVAULT_POLICY_FILE: policyFile((d) => (d.rate_limits.detokenize_per_minute = 1_000_000)),
    };
  }, 60_000);
  afterAll(async () => {
    for (const c of children) await c.kill9();
    await sql?.close();
    await db?.drop();
    await dropRedisPrefix(prefix);
  }, 60_000);

  it("keeps every acknowledged token and never leaves a corrupt one", async () => {
    const first = await startChildVault(env);
    children.push(first);
    const pay = tokens(first.clients, "payment-service", 10_000);
    const book = tokens(first.clients, "booking-service", 10_000);

    const sent = new Set<string>(); // every value ever sent (acknowledged or not)
    const acked = new Map<string, { value: string; caller: "pay" | "book"; category: string }>();
    let inFlight = 0;
    let maxInFlight = 0;
    let n = 0;
    let killed = false;
    const failures: string[] = [];

    const worker = async () => {
      while (!killed) {
        const i = n++;
        const name = `Killnine Person ${i}`;
        const passport = `K${String(i).padStart(8, "0")}`;
        sent.add(name).add(passport);
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        const useBook = i % 4 === 0;
        const out = useBook
          ? await book.tokenize([{ category: "passport_number", value: passport }])
          : await pay.tokenize([{ category: "cardholder_name", value: name }]);
        inFlight--;
        if (out.ok) {
          const tk = out.value!.tokens[0]!;
          acked.set(tk.token, useBook ? { value: passport, caller: "book", category: tk.category } : { value: name, caller: "pay", category: tk.category });
        } else failures.push(codeName(out.code));
      }
    };
    const workers = Array.from({ length: 64 }, worker);
    await waitFor("load with 64 calls in flight", () => acked.size >= 300 && inFlight === 64, 60_000, 5);
    // SIGKILL with the load still running. The 64 calls in flight at this instant may all have been
    // answered already (a flush commits a whole group at once, and its answers can sit in the socket
    // buffer), so the load goes on until the kill cuts calls — the first failure — and only then stops.
    first.proc.kill("SIGKILL");
    await waitFor("a call cut by the kill", () => failures.length > 0, 20_000, 5);
    killed = true;
    await Promise.all(workers);
    await first.kill9(); // waits for the exit and closes the clients
    expect(maxInFlight).toBe(64);
    expect(failures.length).toBeGreaterThan(0); // calls were cut by the kill
    expect(failures.every((c) => c === "UNAVAILABLE" || c === "CANCELLED")).toBe(true);

    const second = await startChildVault(env);
    children.push(second);
    const pay2 = tokens(second.clients, "payment-service", 20_000);
    const book2 = tokens(second.clients, "booking-service", 20_000);
    const reveal = async (toks: string[], caller: "pay" | "book") => {
      const out: (string | undefined)[] = [];
      for (let i = 0; i < toks.length; i += 500) {
        const batch = toks.slice(i, i + 500);
        const r = caller === "pay" ? await pay2.detokenize(batch, "payment_authorization") : await book2.detokenize(batch, "airline_manifest");
        expect(codeName(r.code)).toBe("OK");
        out.push(...valuesOf(r.value));
      }
      return out;
    };

    // Every acknowledged token opens to its value.
    for (const caller of ["pay", "book"] as const) {
      const toks = [...acked].filter(([, a]) => a.caller === caller).map(([tk]) => tk);
      expect(await reveal(toks, caller)).toEqual(toks.map((tk) => acked.get(tk)!.value));
    }

    // Every stored row (acknowledged or not) opens to a value that was really sent: none is corrupt.
    const { rows } = await sql.query<{ id: string; category: string }>("SELECT id, category FROM tokens", []);
    expect(rows.length).toBeGreaterThanOrEqual(acked.size);
    for (const [category, caller] of [["cardholder_name", "pay"], ["passport_number", "book"]] as const) {
      const ids = rows.filter((r) => r.category === category).map((r) => r.id);
      const values = await reveal(ids, caller);
      const bad = values.filter((v) => v === undefined || !sent.has(v));
      expect(bad).toEqual([]);
    }

    // The log chains (the killed instance's and the new one's) verify, with no gap.
    const report = await verifyChains(sql);
    expect(report).toMatchObject({ ok: true });
    expect(report.chains).toBeGreaterThanOrEqual(2);
    process.stdout.write(`kill -9: ${acked.size} acked, ${failures.length} cut, ${rows.length} rows, ${report.entries} log entries in ${report.chains} chains\n`);
    await second.stop();
  }, 120_000);
});
