import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import pg from "pg";
import { Redis } from "ioredis";

/**
 * CPU time per process from /proc/<pid>/stat (utime + stime, every thread), so the bench can say
 * how much CPU each process spent per call over exactly the measured window. CPU per call is far
 * steadier than calls/s on a shared two-core machine: another tenant slows us down, it does not
 * make our own work cost more cycles.
 */

let ticks: number | undefined;
function clockTicks(): number {
  if (ticks === undefined) {
    try {
      ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** CPU seconds a process has used so far (0 if it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which may itself contain spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / clockTicks();
  } catch {
    return 0;
  }
}

export type Group = "vault" | "noop" | "load" | "postgres" | "redis";
export type Snapshot = Map<Group, Map<number, number>>;

/** The processes whose CPU a bench row accounts for. */
export interface CpuProbe {
  snapshot(loadPid: number): Promise<Snapshot>;
  close(): Promise<void>;
}

/**
 * `pids()` gives the vault and no-op server pids of the moment; PostgreSQL backends are those
 * connected to the bench database (pg_stat_activity), Redis is the server's own process_id.
 */
export async function cpuProbe(opts: { dbUrl: string; dbName: string; redisUrl: string; pids: () => { vault?: number[]; noop?: number } }): Promise<CpuProbe> {
  const pgc = new pg.Client({ connectionString: opts.dbUrl });
  await pgc.connect();
  const { rows } = await pgc.query<{ pid: number }>("SELECT pg_backend_pid() AS pid");
  const self = rows[0]!.pid;
  const redis = new Redis(opts.redisUrl, { lazyConnect: false, maxRetriesPerRequest: 1 });
  const info = await redis.info("server");
  const redisPid = Number(/process_id:(\d+)/.exec(info)?.[1] ?? 0);
  await redis.quit();
  return {
    async snapshot(loadPid) {
      const backends = await pgc.query<{ pid: number }>("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> $2", [opts.dbName, self]);
      const p = opts.pids();
      const snap: Snapshot = new Map();
      const put = (g: Group, pids: number[]) => snap.set(g, new Map(pids.map((pid) => [pid, cpuSeconds(pid)])));
      put("vault", p.vault ?? []);
      put("noop", p.noop ? [p.noop] : []);
      put("load", [loadPid]);
      put("postgres", backends.rows.map((r) => r.pid));
      put("redis", redisPid ? [redisPid] : []);
      return snap;
    },
    close: () => pgc.end(),
  };
}

/** CPU seconds each group spent between two snapshots (processes present in both, or new ones from 0). */
export function cpuBetween(a: Snapshot, b: Snapshot): Record<Group, number> {
  const out = {} as Record<Group, number>;
  for (const [g, after] of b) {
    const before = a.get(g) ?? new Map<number, number>();
    let s = 0;
    for (const [pid, t] of after) s += Math.max(0, t - (before.get(pid) ?? t));
    out[g] = s;
  }
  return out;
}
