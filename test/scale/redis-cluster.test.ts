import { rmSync } from "node:fs";
import { dirname } from "node:path";
import { Cluster } from "ioredis";
import { connectRedis, parseRedisUrl, type RedisClient, sameSlot } from "../../src/storage/redis/connect";
import { createKeyChangeNotices } from "../../src/storage/redis/key-notices";
import { newRedisPrefix } from "../helpers/backends";
import { startTestVault, type TestVault } from "../helpers/vault";
import { policyFile } from "../reliability/helpers/policy-file";
import { waitFor } from "../reliability/helpers/ports";
import { codeName, tokens, valuesOf } from "../reliability/helpers/rpc";
import { type OwnCluster, startOwnCluster } from "./helpers/redis-servers";

const BUDGET = 300; // per caller × category a minute (the 240 CVV attempts stay under it)

/** The vault on a real three-master Redis Cluster: CVVs and rate budgets stay exact while slots move. */
describe("Redis Cluster (three masters, started by this test)", () => {
  let cluster: OwnCluster;
  let v: TestVault;
  let policy: string;
  const prefix = newRedisPrefix();

  beforeAll(async () => {
    cluster = await startOwnCluster(3);
    policy = policyFile((doc) => (doc.rate_limits.detokenize_per_minute = BUDGET));
    v = await startTestVault("postgres", { FIELDVAULT_REDIS_URL: cluster.url(prefix), FIELDVAULT_POLICY_FILE: policy });
  }, 90_000);
  afterAll(async () => {
    await v?.stop();
    await cluster?.destroy();
    if (policy) rmSync(dirname(policy), { recursive: true, force: true });
  }, 60_000);

  /** Every key under the prefix, per node (a cluster has no cross-node KEYS). */
  async function keysByNode(): Promise<string[][]> {
    return Promise.all(
      cluster.nodes.map(async (n) => {
        const r = n.connect();
        try {
          return await r.keys(`${prefix}*`);
        } finally {
          r.disconnect();
        }
      }),
    );
  }

  /** The slots node i serves now, as it tells the cluster. */
  async function ownedSlots(i: number): Promise<Set<number>> {
    const r = cluster.nodes[i]!.connect();
    try {
      const out = new Set<number>();
      for (const [lo, hi, [, port]] of (await r.cluster("SLOTS")) as unknown as [number, number, [string, number]][]) {
        if (port === cluster.nodes[i]!.port) for (let s = lo; s <= hi; s++) out.add(s);
      }
      return out;
    } finally {
      r.disconnect();
    }
  }

  it("reveals every CVV exactly once and keeps a rate budget exact while 3000 slots migrate under load", async () => {
    const pay = tokens(v.clients, "payment-service", 15_000);
    // 120 CVVs, spread over the three masters by their keys' slots.
    const cvvs: { token: string; value: string }[] = [];
    for (let i = 0; i < 12; i++) {
      const values = Array.from({ length: 10 }, (_, j) => String(100 + i * 10 + j));
      const out = await pay.tokenize(values.map((value) => ({ category: "card_cvv", value })));
      expect(codeName(out.code)).toBe("OK");
      out.value!.tokens.forEach((t, j) => cvvs.push({ token: t.token, value: values[j]! }));
    }
    const before = await keysByNode();
    expect(before.filter((keys) => keys.some((k) => k.includes(":cvv:"))).length).toBe(3); // on every master
    const slotOf = new Map<string, number>();
    const probe = cluster.nodes[0]!.connect();
    for (const c of cvvs) slotOf.set(c.token, Number(await probe.cluster("KEYSLOT", `${prefix}cvv:${c.token}`)));
    probe.disconnect();
    const node0Before = await ownedSlots(0);

    const names = await pay.tokenize(Array.from({ length: 10 }, (_, i) => ({ category: "cardholder_name", value: `Cluster Person ${i}` })));
    const nameTokens = names.value!.tokens.map((t) => t.token);

    // One minute's window for the budget: start early enough in it.
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 45_000) await new Promise((r) => setTimeout(r, 60_000 - intoMinute + 200));
    const minute = Math.floor(Date.now() / 60_000);

    let migrating = true;
    let duringMigration = 0;
    const moving = cluster.reshard(0, 1, 3000).finally(() => (migrating = false));
    // Load while the slots move: every CVV asked for twice at once, the budget hammered.
    const reveals = new Map<string, string[]>();
    const unavailable: string[] = [];
    const attempt = async (c: { token: string }) => {
      if (migrating) duringMigration++;
      const out = await pay.detokenize([c.token], "payment_authorization");
      if (codeName(out.code) === "UNAVAILABLE") return void unavailable.push(c.token);
      expect(codeName(out.code)).toBe("OK");
      const r = out.value!.results[0]!;
      if (r.outcome?.$case === "value") reveals.set(c.token, [...(reveals.get(c.token) ?? []), r.outcome.value]);
      else if (r.outcome?.$case === "error" && r.outcome.value.code === "UNAVAILABLE") unavailable.push(c.token);
      else expect(r.outcome?.$case === "error" && r.outcome.value.code).toBe("NOT_FOUND");
    };
    let allowed = 0;
    let limited = 0;
    const hammer = async () => {
      for (let i = 0; i < 40; i++) {
        const out = await pay.detokenize(nameTokens, "payment_authorization");
        expect(codeName(out.code)).toBe("OK");
        for (const r of out.value!.results) {
          if (r.outcome?.$case === "value") allowed++;
          else if (r.outcome?.$case === "error" && r.outcome.value.code === "RESOURCE_EXHAUSTED") limited++;
        }
      }
    };
    const load = (async () => {
      for (let i = 0; i < cvvs.length; i += 10) {
        await Promise.all(cvvs.slice(i, i + 10).flatMap((c) => [attempt(c), attempt(c)]));
      }
    })();
    await Promise.all([moving, load, hammer()]);
    // A call that found Redis unavailable revealed nothing; it may try again.
    const retried = unavailable.splice(0);
    for (const token of retried) await attempt({ token });
    expect(unavailable).toEqual([]);
    console.log(`cluster migration: ${duringMigration} CVV attempts during the move, ${retried.length} answered UNAVAILABLE (revealed nothing) and were retried`);
    expect(Math.floor(Date.now() / 60_000)).toBe(minute); // (the whole load ran in one budget window)

    // The migration really moved slots holding CVVs from node 0 to node 1 while they were being used.
    const node1After = await ownedSlots(1);
    const movedCvvs = cvvs.filter((c) => node0Before.has(slotOf.get(c.token)!) && node1After.has(slotOf.get(c.token)!));
    expect(movedCvvs.length).toBeGreaterThan(5);
    expect(duringMigration).toBeGreaterThan(20);

    // Exactly once each, with the right value; none left in Redis.
    expect(cvvs.filter((c) => reveals.get(c.token)?.length !== 1).map((c) => c.token)).toEqual([]);
    expect(cvvs.every((c) => reveals.get(c.token)![0] === c.value)).toBe(true);
    expect((await keysByNode()).flat().filter((k) => k.includes(":cvv:"))).toEqual([]);
    // The budget: exactly BUDGET cardholder-name reveals in this minute, the rest refused.
    expect({ allowed, limited }).toEqual({ allowed: BUDGET, limited: 400 - BUDGET });
  }, 120_000);

  it("keeps a key's companions in its hash slot, as the cluster itself computes slots", async () => {
    const r = cluster.nodes[2]!.connect();
    try {
      for (const key of [`${prefix}cvv:tok_4B9zQ`, "fieldvault:cvv:tok_x", "a{tag}b", "a{b", "{x}"]) {
        const companion = sameSlot(key, "attempts");
        expect({ key, slot: Number(await r.cluster("KEYSLOT", companion)) }).toEqual({ key, slot: Number(await r.cluster("KEYSLOT", key)) });
      }
      expect(() => sameSlot("a{}b", "attempts")).toThrow(/must not contain/);
    } finally {
      r.disconnect();
    }
  });

  it("passes key-change notices between instances' cluster clients, whichever node they subscribe on", async () => {
    const clients: RedisClient[] = [0, 1, 2].map(() => connectRedis(parseRedisUrl(cluster.url(prefix))));
    clients.forEach((c) => c.on("error", () => undefined));
    expect(clients[0]).toBeInstanceOf(Cluster);
    try {
      const seen = [0, 0, 0];
      const unsubs = await Promise.all(clients.map((c, i) => createKeyChangeNotices(c, prefix).subscribe(() => seen[i]!++)));
      // (Subscribing does not wait for the SUBSCRIBE to land: publish until every subscriber hears one.)
      await waitFor("every subscriber to get a notice", async () => {
        await createKeyChangeNotices(clients[1]!, prefix).publish();
        return seen.every((n) => n >= 1);
      }, 10_000, 100);
      await new Promise((r) => setTimeout(r, 300));
      const base = [...seen];
      // A notice published on any one master reaches them all (classic pub/sub spans the cluster).
      for (const node of cluster.nodes) {
        const r = node.connect();
        await r.publish(`${prefix}key-change`, "1");
        r.disconnect();
      }
      await waitFor("every subscriber to get one notice per node", () => seen.every((n, i) => n === base[i]! + 3), 5000, 20);
      await Promise.all(unsubs.map((u) => u()));
    } finally {
      clients.forEach((c) => c.disconnect());
    }
  });
});
