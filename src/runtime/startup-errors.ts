import type { RedisClient } from "../storage/redis/connect";
import type { Redis } from "ioredis";

/** A reason the vault cannot start, in words a person can act on (printed without a stack). */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}

/** host:port/database of a postgres:// URL — never the user's password. */
export function describePostgresUrl(url: string): { host: string; port: string; database: string } {
  try {
    const u = new URL(url);
    return { host: u.hostname || "localhost", port: u.port || "5432", database: decodeURIComponent(u.pathname.replace(/^\//, "")) || "(the user's default)" };
  } catch {
    return { host: "?", port: "?", database: "?" };
  }
}

function databaseReason(err: unknown): string {
  // The store wraps driver errors (DependencyError); the reason is in the driver's own error.
  const e = ((err as { causeError?: unknown }).causeError ?? err) as { code?: string; message?: string };
  switch (e.code) {
    case "ECONNREFUSED":
      return "connection refused (is PostgreSQL running and listening there?)";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "unknown host";
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
      return "no answer (host unreachable or a firewall)";
    case "3D000":
      return "the database does not exist (create it, or fix the name in the URL)";
    case "28P01":
    case "28000":
      return "authentication failed (check the user and password in the URL, and pg_hba.conf)";
    case "42501":
      return "permission denied for the vault's user";
    case "57P03":
      return "PostgreSQL is starting up or shutting down";
    case "53300":
      return "too many connections";
  }
  if (/self[- ]signed|certificate|SSL|TLS/i.test(e.message ?? "")) return "TLS to PostgreSQL failed (check sslmode and its CA)";
  if (/timeout/i.test(e.message ?? "")) return "no answer within the connection timeout";
  return `error ${e.code ?? "(no code)"}`;
}

/** "database unavailable" naming host, port, database and the reason; the URL's password never appears. */
export function databaseUnavailable(url: string, err: unknown): StartupError {
  const { host, port, database } = describePostgresUrl(url);
  return new StartupError(`database unavailable: PostgreSQL at ${host}:${port}, database ${database}: ${databaseReason(err)} (FIELDVAULT_DATABASE_URL)`);
}

/** EADDRINUSE and friends on a listen address, naming the variable that set it. */
export function listenFailure(variable: string, address: string, err: unknown): StartupError {
  const text = `${(err as { code?: string }).code ?? ""} ${(err as Error).message ?? ""}`;
  if (/EADDRINUSE|address already in use/i.test(text)) {
    return new StartupError(`${variable}: ${address} is already in use — is another fieldvault (or another program) running there? Stop it, or set ${variable} to another address`);
  }
  if (/EACCES|permission denied/i.test(text)) return new StartupError(`${variable}: not allowed to listen on ${address} (a port below 1024 needs privileges)`);
  if (/EADDRNOTAVAIL|ENOTFOUND|cannot assign/i.test(text)) return new StartupError(`${variable}: ${address} is not an address of this machine`);
  return new StartupError(`${variable}: cannot listen on ${address}: ${(err as Error).message}`);
}

/** Waits for a Redis client's first connection: undefined when ready, else why not. */
export function redisFirstContact(redis: RedisClient, timeoutMs: number): Promise<string | undefined> {
  if (redis.status === "ready") return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const done = (why: string | undefined) => {
      clearTimeout(timer);
      redis.off("ready", onReady);
      redis.off("error", onError);
      resolve(why);
    };
    const onReady = () => done(undefined);
    const onError = (err: NodeJS.ErrnoException) => {
      const reason =
        err.code === "ECONNREFUSED" ? "connection refused" : /NOAUTH|WRONGPASS|invalid password/i.test(err.message) ? "authentication failed" : err.code === "ENOTFOUND" ? "unknown host" : err.message;
      done(reason);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    redis.on("ready", onReady);
    redis.on("error", onError);
  });
}

/** host:port of a redis:// URL (never its password). */
export function describeRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || "localhost"}:${u.port || "6379"}`;
  } catch {
    return "?";
  }
}
