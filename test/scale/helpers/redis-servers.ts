import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { freePort, waitFor } from "../../reliability/helpers/ports";

const run = promisify(execFile);

/** One redis-server child on a free port, in a folder of its own. */
export interface Server {
  port: number;
  proc: ChildProcess;
  /** A plain connection to this node (the caller disconnects it). */
  connect(): Redis;
  kill(): Promise<void>;
  /** Starts it again with the same arguments (and folder: a cluster node keeps its nodes.conf). */
  restart(): Promise<void>;
}

async function answers(port: number): Promise<boolean> {
  const r = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  r.on("error", () => undefined);
  try {
    await r.connect();
    return (await r.ping()) === "PONG";
  } finally {
    r.disconnect();
  }
}

async function startServer(args: (port: number) => string[], dir: string, bin = "redis-server", port?: number): Promise<Server> {
  const p = port ?? (await freePort());
  let proc!: ChildProcess;
  const start = async () => {
    proc = spawn(bin, args(p), { cwd: dir, stdio: "ignore" });
    const me = proc;
    await waitFor(`${bin} on ${p} to answer PING`, () => {
      if (me.exitCode !== null) throw new Error(`${bin} exited with ${me.exitCode}`);
      return answers(p);
    });
  };
  await start();
  const server: Server = {
    port: p,
    get proc() {
      return proc;
    },
    connect: () => {
      const r = new Redis({ port: p, host: "127.0.0.1", maxRetriesPerRequest: 1 });
      r.on("error", () => undefined);
      return r;
    },
    async kill() {
      const me = proc;
      if (me.exitCode !== null || me.signalCode !== null) return;
      const gone = new Promise((r) => me.once("exit", r));
      me.kill("SIGKILL");
      await gone;
    },
    restart: start,
  };
  return server;
}

const COMMON = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];

export interface OwnCluster {
  nodes: Server[];
  /** redis+cluster:// URL naming every node as a seed. */
  url(prefix: string): string;
  /** `redis-cli --cluster reshard`: moves `slots` slots (and their keys) from one node to another. */
  reshard(from: number, to: number, slots: number): Promise<void>;
  nodeId(i: number): Promise<string>;
  destroy(): Promise<void>;
}

/** A three-master Redis Cluster (no replicas) this test owns, each node on a free port. */
export async function startOwnCluster(masters = 3): Promise<OwnCluster> {
  const root = mkdtempSync(join(tmpdir(), "fv-rcluster-"));
  const nodes: Server[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      const dir = join(root, `n${i}`);
      mkdirSync(dir);
      nodes.push(
        await startServer(
          (port) => ["--port", String(port), ...COMMON, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000", "--dir", dir],
          dir,
        ),
      );
    }
    await run("redis-cli", ["--cluster", "create", ...nodes.map((n) => `127.0.0.1:${n.port}`), "--cluster-replicas", "0", "--cluster-yes"], { timeout: 30_000 });
    await waitFor(
      "the cluster to be ok on every node",
      async () => {
        for (const n of nodes) {
          const r = n.connect();
          try {
            const info = await r.cluster("INFO");
            if (!String(info).includes("cluster_state:ok")) return false;
          } finally {
            r.disconnect();
          }
        }
        return true;
      },
      20_000,
    );
  } catch (err) {
    for (const n of nodes) await n.kill();
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  const nodeId = async (i: number) => {
    const r = nodes[i]!.connect();
    try {
      return String(await r.cluster("MYID"));
    } finally {
      r.disconnect();
    }
  };
  return {
    nodes,
    url: (prefix) => `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(",")}/?prefix=${encodeURIComponent(prefix)}`,
    nodeId,
    async reshard(from, to, slots) {
      const [f, t] = [await nodeId(from), await nodeId(to)];
      await run(
        "redis-cli",
        ["--cluster", "reshard", `127.0.0.1:${nodes[0]!.port}`, "--cluster-from", f, "--cluster-to", t, "--cluster-slots", String(slots), "--cluster-yes", "--cluster-pipeline", "100"],
        { timeout: 60_000 },
      );
    },
    async destroy() {
      for (const n of nodes) await n.kill();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export interface OwnSentinel {
  master: Server;
  replica: Server;
  sentinel: Server;
  masterName: string;
  url(prefix: string): string;
  /** The port the sentinel names as master now. */
  masterPort(): Promise<number>;
  /** SENTINEL FAILOVER, then waits until the sentinel names the other server and it accepts writes. */
  failover(): Promise<number>;
  destroy(): Promise<void>;
}

/** A master, one replica and one sentinel (quorum 1), each on a free port, in a folder this test owns. */
export async function startOwnSentinel(): Promise<OwnSentinel> {
  const root = mkdtempSync(join(tmpdir(), "fv-rsentinel-"));
  const servers: Server[] = [];
  const masterName = "fvmaster";
  try {
    const master = await startServer((port) => ["--port", String(port), ...COMMON, "--dir", root], root);
    servers.push(master);
    const replica = await startServer((port) => ["--port", String(port), ...COMMON, "--dir", root, "--replicaof", "127.0.0.1", String(master.port)], root);
    servers.push(replica);
    const sentinelPort = await freePort();
    const conf = join(root, "sentinel.conf");
    writeFileSync(
      conf,
      [
        `port ${sentinelPort}`,
        "bind 127.0.0.1",
        `dir ${root}`,
        `sentinel monitor ${masterName} 127.0.0.1 ${master.port} 1`,
        `sentinel down-after-milliseconds ${masterName} 2000`,
        `sentinel failover-timeout ${masterName} 10000`,
        `sentinel parallel-syncs ${masterName} 1`,
        "",
      ].join("\n"),
    );
    const sentinel = await startServer(() => [conf, "--sentinel"], root, "redis-server", sentinelPort);
    servers.push(sentinel);
    const ask = async (...args: string[]) => {
      const r = sentinel.connect();
      try {
        return await r.call("SENTINEL", ...args);
      } finally {
        r.disconnect();
      }
    };
    const masterPort = async () => Number(((await ask("get-master-addr-by-name", masterName)) as string[])[1]);
    // The sentinel must know the replica before it can fail over to it.
    await waitFor("the sentinel to see the replica", async () => ((await ask("replicas", masterName)) as unknown[]).length === 1, 20_000, 200);
    await waitFor("the replica to be in sync", async () => {
      const r = replica.connect();
      try {
        return /master_link_status:up/.test(await r.info("replication"));
      } finally {
        r.disconnect();
      }
    });
    return {
      master,
      replica,
      sentinel,
      masterName,
      url: (prefix) => `redis+sentinel://127.0.0.1:${sentinel.port}/${masterName}?prefix=${encodeURIComponent(prefix)}`,
      masterPort,
      async failover() {
        const before = await masterPort();
        await ask("failover", masterName);
        const after = await waitFor("the sentinel to name a new master", async () => {
          const p = await masterPort();
          return p !== before ? p : undefined;
        }, 30_000, 100);
        const promoted = servers.find((s) => s.port === after)!;
        const demoted = servers.find((s) => s.port === before)!;
        await waitFor("the new master to accept writes", async () => {
          const r = promoted.connect();
          try {
            return /role:master/.test(await r.info("replication"));
          } finally {
            r.disconnect();
          }
        });
        // Until the sentinel reconfigures the old master as a replica, it still takes writes (the
        // split-brain window of asynchronous replication); wait that out.
        await waitFor("the old master to become a replica", async () => {
          const r = demoted.connect();
          try {
            return /role:slave/.test(await r.info("replication"));
          } finally {
            r.disconnect();
          }
        }, 20_000);
        return after;
      },
      async destroy() {
        for (const s of servers.reverse()) await s.kill();
        rmSync(root, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const s of servers) await s.kill();
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
}
