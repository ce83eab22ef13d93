import { hashTagOf, parseRedisUrl } from "../../src/storage/redis/connect";
import { loadConfig } from "../../src/config/config";

const SECRET = "s3cr3t-Pa55";

describe("FIELDVAULT_REDIS_URL forms", () => {
  it("reads one server, a cluster's seed nodes and a sentinel group", () => {
    expect(parseRedisUrl("redis://127.0.0.1:6379/2")).toMatchObject({ kind: "single", tls: false });
    expect(parseRedisUrl(`redis+cluster://:${SECRET}@10.0.0.1:7000,10.0.0.2:7001,cache-3/?prefix=fv:`)).toEqual({
      kind: "cluster",
      nodes: [
        { host: "10.0.0.1", port: 7000 },
        { host: "10.0.0.2", port: 7001 },
        { host: "cache-3", port: 6379 },
      ],
      tls: false,
      username: undefined,
      password: SECRET,
      prefix: "fv:",
    });
    expect(parseRedisUrl("rediss+sentinel://app:pw@s1:26379,s2/mymaster?sentinel_password=x&db=3")).toEqual({
      kind: "sentinel",
      sentinels: [
        { host: "s1", port: 26379 },
        { host: "s2", port: 26379 },
      ],
      masterName: "mymaster",
      sentinelPassword: "x",
      db: 3,
      tls: true,
      username: "app",
      password: "pw",
      prefix: undefined,
    });
  });

  it("drops its own prefix parameter before ioredis parses a single-server URL", () => {
    const t = parseRedisUrl("redis://h:6379/0?prefix=abc:");
    expect(t).toMatchObject({ kind: "single", prefix: "abc:" });
    expect(t.kind === "single" && t.url).not.toContain("prefix");
  });

  it.each([
    ["http://h:6379", /must start with redis:\/\//],
    ["redis://h1:1,h2:2", /names one server/],
    ["redis+sentinel://s1:26379", /must end with \/mastername/],
    ["redis+cluster://h1:7000/3", /no database path/],
    ["redis+cluster://h1:99999", /port must be/],
    ["redis+cluster://h1:7000/?prefix=%7Bx%7D", /without spaces or braces/],
  ])("refuses %s with a reason", (url, reason) => {
    expect(() => parseRedisUrl(url)).toThrow(reason);
  });

  it("names the variable and never repeats the URL or its password in a config error", () => {
    let message = "";
    try {
      loadConfig({ FIELDVAULT_REDIS_URL: `redis+sentinel://:${SECRET}@s1:26379` });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/FIELDVAULT_REDIS_URL: a sentinel URL must end with \/mastername/);
    expect(message).not.toContain(SECRET);
  });

  it("takes the key prefix from the URL over FIELDVAULT_REDIS_PREFIX, and refuses braces in the prefix", () => {
    expect(loadConfig({ FIELDVAULT_REDIS_URL: "redis+cluster://h1:7000/?prefix=fromurl:", FIELDVAULT_REDIS_PREFIX: "env:" }).redisPrefix).toBe("fromurl:");
    expect(loadConfig({ FIELDVAULT_REDIS_URL: "redis://h1:7000", FIELDVAULT_REDIS_PREFIX: "env:" }).redisPrefix).toBe("env:");
    expect(() => loadConfig({ FIELDVAULT_REDIS_PREFIX: "{fv}:" })).toThrow(/FIELDVAULT_REDIS_PREFIX: must be 1–128 characters without spaces or braces/);
  });

  it("finds hash tags the way Redis Cluster does", () => {
    expect(hashTagOf("a{user1}b{x}")).toBe("user1");
    expect(hashTagOf("a{}b")).toBe("a{}b");
    expect(hashTagOf("a{b")).toBe("a{b");
  });

  it("needs a primary before a read replica", () => {
    expect(() => loadConfig({ FIELDVAULT_DATABASE_READ_URL: "postgres://replica/db" })).toThrow(/FIELDVAULT_DATABASE_READ_URL: needs FIELDVAULT_DATABASE_URL/);
    expect(loadConfig({ FIELDVAULT_DATABASE_URL: "postgres://p/db", FIELDVAULT_DATABASE_READ_URL: "postgres://r/db" }).databaseReadUrl).toBe("postgres://r/db");
  });
});
