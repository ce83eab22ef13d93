import { status } from "@grpc/grpc-js";
import { startTestVault, type TestVault } from "../helpers/vault";
import { verifyChains } from "./helpers/chain";
import { startOwnPostgres, type OwnPostgres } from "./helpers/own-postgres";
import { policyFile } from "./helpers/policy-file";
import { waitFor } from "./helpers/ports";
import { codeName, tokens, valuesOf } from "./helpers/rpc";

/**
 * PostgreSQL goes away under load and comes back. The vault must fail closed (UNAVAILABLE, within the
 * deadline, never a value without a committed log entry), recover on its own, and lose nothing it
 * acknowledged.
 */
describe("PostgreSQL outage under load", () => {
  let own: OwnPostgres;
  let t: TestVault;
  const DEADLINE_MS = 5000;

  beforeAll(async () => {
    own = await startOwnPostgres();
    const policy = policyFile((d) => (d.rate_limits.detokenize_per_minute = 1_000_000));
    t = await startTestVault("postgres", { FIELDVAULT_POLICY_FILE: policy }, { db: own.db });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
    await own?.destroy();
  }, 60_000);

  it("fails closed with UNAVAILABLE during the outage, recovers within 5 s without a restart, and loses nothing", async () => {
    const api = tokens(t.clients, "payment-service", DEADLINE_MS);
    const acked = new Map<string, string>(); // token → value, every tokenize the vault acknowledged
    const reveals: { token: string; value: string }[] = [];
    const failures: { op: string; code: string; ms: number; phase: string }[] = [];
    let phase: "before" | "outage" | "after" = "before";
    let n = 0;
    let okOps = 0;

    const tokenizeOne = async () => {
      const value = `Outage Person ${process.pid} ${n++}`;
      const out = await api.tokenize([{ category: "cardholder_name", value }]);
      if (out.ok) {
        acked.set(out.value!.tokens[0]!.token, value);
        okOps++;
      } else failures.push({ op: "tokenize", code: codeName(out.code), ms: out.ms, phase });
    };
    const detokenizeSome = async () => {
      const known = [...acked.keys()];
      const pick = [known[Math.floor(Math.random() * known.length)]!, known[known.length - 1]!];
      const out = await api.detokenize(pick, "payment_authorization");
      if (out.ok) {
        valuesOf(out.value).forEach((v, i) => v !== undefined && reveals.push({ token: pick[i]!, value: v }));
        okOps++;
      } else failures.push({ op: "detokenize", code: codeName(out.code), ms: out.ms, phase });
    };

    for (let i = 0; i < 20; i++) await tokenizeOne();
    expect(acked.size).toBe(20);

    let running = true;
    const workers = Array.from({ length: 8 }, async () => {
      while (running) {
        await tokenizeOne();
        await detokenizeSome();
        if (phase === "outage") await new Promise((r) => setTimeout(r, 20)); // fast failures: don't spin
      }
    });

    await waitFor("load to get going", () => okOps >= 40, 30_000);
    phase = "outage";
    own.stop("immediate");
    await waitFor("calls to fail during the outage", () => failures.filter((f) => f.phase === "outage").length >= 40, 30_000);

    // A single call while the database is down: a clear UNAVAILABLE well before its deadline.
    const probe = await api.tokenize([{ category: "cardholder_name", value: "Probe During Outage" }]);
    expect(codeName(probe.code)).toBe("UNAVAILABLE");
    const probeRead = await api.detokenize([...acked.keys()].slice(0, 3), "payment_authorization");
    expect(codeName(probeRead.code)).toBe("UNAVAILABLE");

    await own.start();
    const back = Date.now();
    phase = "after";
    // Serves again without a restart: the first successful tokenize + detokenize after the server is back.
    await waitFor(
      "the vault to serve again",
      async () => {
        const out = await tokens(t.clients, "payment-service", 1000).tokenize([{ category: "cardholder_name", value: "Probe After Outage" }]);
        if (!out.ok) return false;
        acked.set(out.value!.tokens[0]!.token, "Probe After Outage");
        const read = await tokens(t.clients, "payment-service", 1000).detokenize([out.value!.tokens[0]!.token], "payment_authorization");
        return read.ok && valuesOf(read.value)[0] === "Probe After Outage";
      },
      5000,
      50,
    );
    const recoveredMs = Date.now() - back;
    const okAtRecovery = okOps;
    await waitFor("load to succeed again", () => okOps >= okAtRecovery + 40, 30_000);
    running = false;
    await Promise.all(workers);

    // Every failure, in every phase, was a clean UNAVAILABLE that came back before the deadline (no hang).
    const codes = [...new Set(failures.map((f) => f.code))];
    expect(codes).toEqual(["UNAVAILABLE"]);
    expect(Math.max(...failures.map((f) => f.ms))).toBeLessThan(DEADLINE_MS);
    expect(failures.filter((f) => f.phase === "outage").length).toBeGreaterThanOrEqual(40);
    expect(recoveredMs).toBeLessThan(5000);

    // No value left without a committed "allowed" entry for it (counted per token).
    const { rows } = await t.vault.db.query<{ token: string; n: number }>(
      "SELECT token, count(*)::int AS n FROM access_log WHERE action = 'detokenize' AND outcome = 'allowed' GROUP BY token",
      [],
    );
    const logged = new Map(rows.map((r) => [r.token, r.n]));
    const revealed = new Map<string, number>();
    for (const r of reveals) revealed.set(r.token, (revealed.get(r.token) ?? 0) + 1);
    expect(reveals.length).toBeGreaterThan(0);
    for (const [token, count] of revealed) expect({ token, logged: logged.get(token) ?? 0 }).toEqual({ token, logged: expect.any(Number) });
    const short = [...revealed].filter(([token, count]) => (logged.get(token) ?? 0) < count);
    expect(short).toEqual([]);
    for (const r of reveals) expect(r.value).toBe(acked.get(r.token));

    // Every acknowledged token (before, during, after) still opens to its value.
    const all = [...acked.keys()];
    for (let i = 0; i < all.length; i += 500) {
      const batch = all.slice(i, i + 500);
      const out = await tokens(t.clients, "payment-service", 20_000).detokenize(batch, "payment_authorization");
      expect(out.code).toBeUndefined();
      expect(valuesOf(out.value)).toEqual(batch.map((tok) => acked.get(tok)));
    }

    // The log chain verifies end to end, with no gap.
    const report = await verifyChains(t.vault.db);
    expect(report).toMatchObject({ ok: true });
    expect(report.entries).toBeGreaterThan(acked.size);
    process.stdout.write(
      `postgres outage: ${acked.size} acked, ${reveals.length} reveals, ${failures.length} UNAVAILABLE (max ${Math.max(...failures.map((f) => f.ms))} ms), recovered in ${recoveredMs} ms, ${report.entries} log entries\n`,
    );
    expect(status.UNAVAILABLE).toBe(14);
  }, 120_000);
});
