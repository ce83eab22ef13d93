import { readFileSync } from "node:fs";
import { connect } from "node:http2";
import pg from "pg";
import { status } from "@grpc/grpc-js";
import { createTestDatabase, dropRedisPrefix, newRedisPrefix, REDIS_URL, type TestDatabase } from "../helpers/backends";
import { startChildVault, type ChildVault } from "../reliability/helpers/child-vault";
import { rawCall } from "../reliability/helpers/rpc";

/**
 * Memory amplification before authorisation: an identity the policy does not know sends huge
 * Tokenize messages. The real vault process (its RSS read from /proc) refuses an oversized message
 * from its length prefix (RESOURCE_EXHAUSTED) and decodes at most batch-limit + 1 items of one
 * within the size limit (INVALID_ARGUMENT); its RSS stays flat; its connections advertise a stream
 * cap; and the flood of denials costs one access-log entry plus a count, not one entry per call.
 */
describe("memory amplification before authorisation", () => {
  let db: TestDatabase;
  let prefix: string;
  let v: ChildVault;
  const TOKENIZE = "/fieldvault.v1.TokenService/Tokenize";
  const rssMiB = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${v.proc.pid}/status`, "utf8"))![1]) / 1024;
  /** `n` empty Field messages: field 1, length 0 — two bytes each. */
  const emptyFields = (n: number) => Buffer.alloc(2 * n, Buffer.from([0x0a, 0x00]));

  beforeAll(async () => {
    db = await createTestDatabase();
    prefix = newRedisPrefix();
    v = await startChildVault({ FIELDVAULT_DATABASE_URL: db.url, FIELDVAULT_REDIS_URL: REDIS_URL, FIELDVAULT_REDIS_PREFIX: prefix });
    // Warm up the paths a normal call takes.
    await rawCall(v.clients.tokens, TOKENIZE, "payment-service", emptyFields(1));
  }, 60_000);
  afterAll(async () => {
    await v?.stop();
    await db?.drop();
    await dropRedisPrefix(prefix);
  }, 60_000);

  it("refuses a 14 MiB message fast with RESOURCE_EXHAUSTED, RSS flat", async () => {
    const before = rssMiB();
    const outs = await Promise.all(Array.from({ length: 4 }, () => rawCall(v.clients.tokens, TOKENIZE, "intruder", emptyFields(7_000_000), 10_000)));
    for (const o of outs) {
      expect(status[o.code!]).toBe("RESOURCE_EXHAUSTED");
      expect(o.ms).toBeLessThan(3000);
    }
    expect(rssMiB() - before).toBeLessThan(60);
  }, 30_000);

  it("decodes at most batch + 1 items of a message within the size limit (2,000,000 empty fields): INVALID_ARGUMENT, RSS flat", async () => {
    const before = rssMiB();
    const outs = await Promise.all(Array.from({ length: 4 }, () => rawCall(v.clients.tokens, TOKENIZE, "payment-service", emptyFields(2_000_000), 10_000)));
    for (const o of outs) {
      expect(status[o.code!]).toBe("INVALID_ARGUMENT");
      expect(o.details).toBe("fields: at most 1000 items per call");
      expect(o.ms).toBeLessThan(3000);
    }
    expect(rssMiB() - before).toBeLessThan(80);
  }, 30_000);

  it("advertises a cap on concurrent streams per connection", async () => {
    const session = connect(`http://${v.address}`);
    try {
      const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve, reject) => {
        session.once("remoteSettings", resolve);
        session.once("error", reject);
      });
      expect(settings.maxConcurrentStreams).toBe(100);
    } finally {
      session.close();
    }
  });

  it("logs a flood of unknown-identity denials as one entry and one summary", async () => {
    for (let i = 0; i < 30; i++) {
      const o = await rawCall(v.clients.tokens, TOKENIZE, "flooder", emptyFields(1));
      expect(status[o.code!]).toBe("PERMISSION_DENIED");
    }
    const sql = new pg.Client({ connectionString: db.url });
    await sql.connect();
    try {
      const rows = async () => (await sql.query<{ detail: string }>("SELECT detail FROM access_log WHERE caller = 'flooder' ORDER BY seq")).rows;
      expect(await rows()).toHaveLength(1);
      await v.stop(); // the summary is written when the window closes, or at shutdown
      const all = await rows();
      expect(all).toHaveLength(2);
      expect(all[1]!.detail).toMatch(/^repeated=29 window=60s: /);
    } finally {
      await sql.end();
    }
  }, 30_000);
});
