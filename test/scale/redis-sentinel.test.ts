import { connectRedis, parseRedisUrl, type RedisClient } from "../../src/storage/redis/connect";
import { createKeyChangeNotices } from "../../src/storage/redis/key-notices";
import { newRedisPrefix } from "../helpers/backends";
import { startTestVault, type TestVault } from "../helpers/vault";
import { waitFor } from "../reliability/helpers/ports";
import { codeName, tokens } from "../reliability/helpers/rpc";
import { type OwnSentinel, startOwnSentinel } from "./helpers/redis-servers";

/** The vault through Redis Sentinel (master, replica, one sentinel, all started here) across a forced failover. */
describe("Redis Sentinel with a forced failover", () => {
  let group: OwnSentinel;
  let v: TestVault;
  const prefix = newRedisPrefix();

  beforeAll(async () => {
    group = await startOwnSentinel();
    v = await startTestVault("postgres", { FIELDVAULT_REDIS_URL: group.url(prefix) });
  }, 90_000);
  afterAll(async () => {
    await v?.stop();
    await group?.destroy();
  }, 60_000);

  const offset = async (s: OwnSentinel["master"]) => {
    const r = s.connect();
    try {
      return Number(/master_repl_offset:(\d+)/.exec(await r.info("replication"))![1]);
    } finally {
      r.disconnect();
    }
  };

  it("keeps CVVs single-use across the failover, and follows the new master for new ones and for notices", async () => {
    const pay = tokens(v.clients, "payment-service", 10_000);
    const reveal = async (token: string) => {
      const out = await pay.detokenize([token], "payment_authorization");
      if (codeName(out.code) !== "OK") return codeName(out.code);
      const r = out.value!.results[0]!;
      return r.outcome?.$case === "value" ? `value:${r.outcome.value}` : r.outcome?.value.code;
    };
    const made = await pay.tokenize(["111", "222", "333", "444"].map((value) => ({ category: "card_cvv", value })));
    expect(codeName(made.code)).toBe("OK");
    const [used, kept1, kept2, usedTwice] = made.value!.tokens.map((t) => t.token) as [string, string, string, string];
    expect(await reveal(used)).toBe("value:111");
    expect(await reveal(usedTwice)).toBe("value:444");

    // Subscribers through the sentinel: one on a client of its own (another instance's).
    const other: RedisClient = connectRedis(parseRedisUrl(group.url(prefix)));
    other.on("error", () => undefined);
    let notices = 0;
    const unsubscribe = await createKeyChangeNotices(other, prefix).subscribe(() => notices++);

    // Asynchronous replication: wait for the replica to have every write (and every GETDEL) first.
    await waitFor("the replica to catch up", async () => (await offset(group.replica)) >= (await offset(group.master)));
    const oldMaster = await group.masterPort();
    const newMaster = await group.failover();
    expect(newMaster).toBe(group.replica.port);
    expect(newMaster).not.toBe(oldMaster);

    // The vault finds the new master by itself; while its client reconnects a call may answer
    // UNAVAILABLE, which reveals nothing, so each call here is retried until it gets an answer.
    const settled = (token: string) =>
      waitFor(`an answer for ${token}`, async () => {
        const r = await reveal(token);
        return r === "UNAVAILABLE" ? undefined : r;
      }, 20_000, 200);
    expect(await settled(kept1)).toBe("value:222");
    expect(await settled(kept1)).toBe("NOT_FOUND");
    expect(await settled(kept2)).toBe("value:333");
    for (const t of [used, usedTwice, kept2]) expect(await settled(t)).toBe("NOT_FOUND");

    // New CVVs land on the new master.
    const after = await waitFor("a tokenize on the new master", async () => {
      const out = await pay.tokenize([{ category: "card_cvv", value: "555" }]);
      return codeName(out.code) === "OK" ? out : undefined;
    }, 20_000, 200);
    const r = group.replica.connect();
    expect(await r.exists(`${prefix}cvv:${after.value!.tokens[0]!.token}`)).toBe(1);
    r.disconnect();
    expect(await settled(after.value!.tokens[0]!.token)).toBe("value:555");

    // Notices: the subscriber re-subscribed on the new master.
    await waitFor("a notice published after the failover to arrive", async () => {
      await createKeyChangeNotices(other, prefix).publish().catch(() => undefined);
      return notices > 0;
    }, 20_000, 250);
    await unsubscribe();
    other.disconnect();
  }, 90_000);
});
