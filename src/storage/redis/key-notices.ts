import { Cluster } from "ioredis";
import type { RedisClient } from "./connect";

/** "Key versions changed: re-read them" between instances; a hint, never the only path (see Keyring). */
export interface KeyChangeNotices {
  publish(): Promise<void>;
  /** Calls `onNotice` for every notice another (or this) instance publishes; returns unsubscribe. */
  subscribe(onNotice: () => void): Promise<() => Promise<void>>;
}

/**
 * Key-change notices over Redis pub/sub, on all three topologies with one code path.
 *
 * Classic PUBLISH/SUBSCRIBE, not sharded (SPUBLISH/SSUBSCRIBE): sharded pub/sub exists only on a
 * cluster and only from Redis 7, and it keeps a message inside one shard — a saving that matters
 * for chatty channels. A key change happens a few times a year per category, so broadcasting it on
 * the cluster bus costs nothing. ioredis's Cluster subscribes on one node, and a cluster forwards
 * every classic PUBLISH to every node; a Sentinel-managed client resubscribes on the new master
 * after a failover (autoResubscribe). A notice published while Redis is away is lost: the keyring's
 * PostgreSQL NOTIFY and its refresh timer still bring the rotation within FIELDVAULT_KEY_CACHE_TTL_MS.
 */
export function createKeyChangeNotices(client: RedisClient, prefix: string): KeyChangeNotices {
  const channel = `${prefix}key-change`;
  return {
    async publish() {
      await client.publish(channel, "1");
    },
    async subscribe(onNotice) {
      // A subscribed connection can do nothing else: a connection of its own, which may queue
      // the SUBSCRIBE until it is connected (and resubscribes by itself after a reconnect).
      const sub: RedisClient =
        client instanceof Cluster ? client.duplicate(undefined, { enableOfflineQueue: true }) : client.duplicate({ enableOfflineQueue: true });
      sub.on("error", () => undefined);
      sub.on("message", (ch: string) => ch === channel && onNotice());
      // Not awaited: with Redis away at start-up the SUBSCRIBE waits in the queue, and start-up must not.
      void sub.subscribe(channel).catch(() => undefined);
      return async () => {
        sub.disconnect();
      };
    },
  };
}
