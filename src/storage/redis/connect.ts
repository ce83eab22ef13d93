import { Cluster, Redis, type RedisOptions } from "ioredis";

/**
 * Which Redis the vault talks to, parsed from FIELDVAULT_REDIS_URL:
 *
 *   redis://[user:pass@]host:port[/db]                         one server (ioredis `Redis`)
 *   redis+cluster://[user:pass@]h1:p1,h2:p2[/][?prefix=…]        Redis Cluster (ioredis `Cluster`; seed nodes)
 *   redis+sentinel://[user:pass@]h1:p1,h2:p2/mastername[?…]      Sentinel (ioredis `Redis` with `sentinels`)
 *
 * `rediss…` turns on TLS. On every form `?prefix=` sets the key prefix (instead of
 * FIELDVAULT_REDIS_PREFIX); on Sentinel `?sentinel_password=` authenticates to the sentinels
 * and `?db=` picks the database. Messages about a bad URL never repeat it (it may hold a password).
 */
export type RedisTarget =
  | ({ kind: "single"; url: string } & Common)
  | ({ kind: "cluster"; nodes: HostPort[] } & Common)
  | ({ kind: "sentinel"; sentinels: HostPort[]; masterName: string; sentinelPassword?: string; db?: number } & Common);

interface Common {
  tls: boolean;
  username?: string;
  password?: string;
  prefix?: string;
}

export interface HostPort {
  host: string;
  port: number;
}

/** ioredis's single-server/Sentinel client or its Cluster client: the stores use what both offer. */
export type RedisClient = Redis | Cluster;

export class RedisUrlError extends Error {
  constructor(message: string) {
    super(`FIELDVAULT_REDIS_URL: ${message}`);
    this.name = "RedisUrlError";
  }
}

const SCHEME = /^(rediss?)(\+cluster|\+sentinel)?:\/\//;
const PREFIX_RULE = /^[^\s{}]{1,128}$/;

function hostList(list: string, defaultPort: number): HostPort[] {
  const out = list.split(",").map((part) => {
    const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(part.trim());
    if (!m) throw new RedisUrlError("each host must be host or host:port, separated by commas");
    const port = m[2] ? Number(m[2]) : defaultPort;
    if (port < 1 || port > 65535) throw new RedisUrlError("a port must be 1–65535");
    return { host: m[1]!.replace(/^\[|\]$/g, ""), port };
  });
  if (out.length === 0) throw new RedisUrlError("names no host");
  return out;
}

/** Parses and checks a Redis URL of any of the three forms (pure; used by config validation too). */
export function parseRedisUrl(url: string): RedisTarget {
  const scheme = SCHEME.exec(url);
  if (!scheme) throw new RedisUrlError("must start with redis://, rediss://, redis+cluster://, redis+sentinel:// (or rediss+…)");
  const tls = scheme[1] === "rediss";
  const rest = url.slice(scheme[0].length);
  // authority = up to the first "/" or "?"; userinfo ends at its last "@".
  const end = rest.search(/[/?]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  const tail = end < 0 ? "" : rest.slice(end);
  const at = authority.lastIndexOf("@");
  const userinfo = at < 0 ? "" : authority.slice(0, at);
  const hosts = at < 0 ? authority : authority.slice(at + 1);
  let username: string | undefined;
  let password: string | undefined;
  if (userinfo) {
    const colon = userinfo.indexOf(":");
    try {
      username = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon)) || undefined;
      password = colon < 0 ? undefined : decodeURIComponent(userinfo.slice(colon + 1));
    } catch {
      throw new RedisUrlError("user name or password is not valid percent-encoding");
    }
  }
  const q = tail.indexOf("?");
  const path = q < 0 ? tail : tail.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : tail.slice(q + 1));
  const prefix = params.get("prefix") ?? undefined;
  if (prefix !== undefined && !PREFIX_RULE.test(prefix)) throw new RedisUrlError("prefix must be 1–128 characters without spaces or braces");
  const common: Common = { tls, username, password, prefix };

  switch (scheme[2]) {
    case "+cluster": {
      if (path && path !== "/") throw new RedisUrlError("a cluster URL has no database path (Redis Cluster has only database 0)");
      return { kind: "cluster", nodes: hostList(hosts, 6379), ...common };
    }
    case "+sentinel": {
      const masterName = decodeURIComponent(path.replace(/^\//, "").replace(/\/$/, ""));
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(masterName)) throw new RedisUrlError("a sentinel URL must end with /mastername");
      const db = params.get("db");
      if (db !== null && !/^\d{1,2}$/.test(db)) throw new RedisUrlError("db must be a database number");
      return {
        kind: "sentinel",
        sentinels: hostList(hosts, 26379),
        masterName,
        sentinelPassword: params.get("sentinel_password") ?? undefined,
        db: db === null ? undefined : Number(db),
        ...common,
      };
    }
    default: {
      const list = hostList(hosts, 6379);
      if (list.length !== 1) throw new RedisUrlError("redis:// names one server; use redis+cluster:// or redis+sentinel:// for several");
      // ioredis parses the single-server URL itself; drop our own parameter first.
      const u = new URL(url);
      u.searchParams.delete("prefix");
      return { kind: "single", url: u.toString(), ...common };
    }
  }
}

/** Behaviour every vault connection shares: fail fast instead of queueing while Redis is away. */
const FAIL_FAST: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 1000,
  connectTimeout: 2000,
  retryStrategy: (times) => Math.min(times * 200, 2000),
  // Commands issued in one event-loop turn share a round trip (per node, in a cluster).
  enableAutoPipelining: true,
};

/**
 * Opens ioredis's own client for the target. A write that lands on a server that has just become a
 * replica (Sentinel failover) answers READONLY: reconnecting makes ioredis ask the sentinels for the
 * new master. In a cluster, MOVED/ASK redirections during a slot migration are ioredis's job.
 */
export function connectRedis(target: RedisTarget, extra: RedisOptions = {}): RedisClient {
  const tls = target.tls ? {} : undefined;
  const auth = { username: target.username, password: target.password };
  const reconnectOnError = (err: Error) => (err.message.startsWith("READONLY") ? 2 : false);
  switch (target.kind) {
    case "single":
      return new Redis(target.url, { ...FAIL_FAST, reconnectOnError, ...extra });
    case "cluster":
      return new Cluster(target.nodes, {
        enableOfflineQueue: false,
        // Not on a cluster: an auto-pipeline is grouped by slot owner, and a slot that moves while one
        // is in flight fails the whole pipeline. Concurrent commands still share each node's socket.
        enableAutoPipelining: false,
        retryDelayOnFailover: 100,
        retryDelayOnClusterDown: 200,
        clusterRetryStrategy: (times) => Math.min(times * 200, 2000),
        slotsRefreshTimeout: 2000,
        // A node connection may queue while it connects (a redirection during a slot migration opens
        // one); commandTimeout still bounds every command. The cluster as a whole fails fast.
        redisOptions: { ...FAIL_FAST, enableAutoPipelining: false, enableOfflineQueue: true, ...auth, tls, reconnectOnError, ...extra },
      });
    case "sentinel":
      return new Redis({
        ...FAIL_FAST,
        ...auth,
        tls,
        sentinels: target.sentinels,
        name: target.masterName,
        sentinelPassword: target.sentinelPassword,
        sentinelTLS: tls,
        enableTLSForSentinelMode: target.tls,
        db: target.db,
        reconnectOnError,
        // Subscribes to the sentinels' +switch-master so a failover is noticed before a command fails.
        failoverDetector: true,
        ...extra,
      });
  }
}

/** Resolves once the client is ready, or after `timeoutMs` (it keeps connecting in the background). */
export async function readyWithin(client: RedisClient, timeoutMs: number): Promise<boolean> {
  if (client.status === "ready") return true;
  return new Promise<boolean>((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      client.off("ready", onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), timeoutMs);
    client.on("ready", onReady);
  });
}

/**
 * The hash tag of a key as Redis Cluster computes it: the text between the first "{" and the
 * next "}", if that is not empty; else the whole key.
 */
export function hashTagOf(key: string): string {
  const open = key.indexOf("{");
  if (open >= 0) {
    const close = key.indexOf("}", open + 1);
    if (close > open + 1) return key.slice(open + 1, close);
  }
  return key;
}

/**
 * A companion key guaranteed to share `key`'s hash slot, for scripts and multi-key commands that
 * touch a key and its companions together (e.g. a CVV and its attempt counter). `key` itself keeps
 * its name, so adding companions never moves data already in Redis.
 */
export function sameSlot(key: string, suffix: string): string {
  if (hashTagOf(key) !== key) return `${key}:${suffix}`;
  // A tag ends at the first "}": a tagless key holding one has no companion name (our prefixes
  // and tokens never hold braces).
  if (key.includes("}")) throw new Error("sameSlot: a key without a hash tag must not contain '}'");
  return `{${key}}:${suffix}`;
}
