import { newKey } from "../crypto/aead";
import type { Kek } from "../crypto/envelope";
import { fingerprintKey } from "../crypto/fingerprint";
import { type RootKey, RootKeyUnavailableError, unwrapKek, unwrapSecret, wrapKek, wrapSecret } from "../crypto/root-key";
import { kekStateMac, verifyKekState } from "../crypto/metadata-mac";
import { IntegrityError, VaultError } from "../domain/errors";
import type { RootKeyring } from "../config/root-keys";
import type { Db } from "../storage/db";
import {
  getSecret,
  insertFirstKek,
  insertSecret,
  KEY_CHANGE_CHANNEL,
  type KekRow,
  type KeyState,
  listKekRows,
  setKekStateMac,
} from "../storage/postgres/key-store";
import type { KeyChangeNotices } from "../storage/redis/key-notices";

export const FINGERPRINT_SECRET = "fingerprint-master";
/** Keys the MACs over token metadata and KEK states (crypto/metadata-mac.ts). */
export const METADATA_SECRET = "metadata-mac";

/** The root key's device (HSM) failed: UNAVAILABLE, and nothing changed. Keys already in memory keep working. */
export class RootKeyDown extends VaultError {
  constructor(reason: string) {
    super("UNAVAILABLE", `${reason}; nothing was changed`);
    this.name = "RootKeyDown";
  }
}

/** Runs a root-key call, turning a failed device into RootKeyDown. */
export async function viaRoot<T>(call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof RootKeyUnavailableError) throw new RootKeyDown(err.message);
    throw err;
  }
}

interface Loaded extends KekRow {
  key?: Uint8Array;
  /** The row's state failed its MAC. */
  tampered?: boolean;
}

/**
 * The in-memory view of every category's KEK versions, unwrapped with the root key. Refreshed on
 * a key-change notice (PostgreSQL LISTEN/NOTIFY, and Redis pub/sub when `notices` is given — NOTIFY
 * does not pass a transaction-pooling PgBouncer) and at least every `cacheTtlMs`, so every instance
 * uses a rotation within about a second.
 */
export class Keyring {
  private byCategory = new Map<string, Loaded[]>();
  private fpKeys = new Map<string, Uint8Array>();
  private metaKey: Uint8Array | undefined;
  private timer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private refreshing: Promise<void> | undefined;
  private currentRoot: string | undefined;
  private unsubscribe: (() => Promise<void>) | undefined;
  private notices: KeyChangeNotices | undefined;
  private readonly reported = new Set<string>();
  private onStateTampered: ((category: string, version: number) => void) | undefined;

  private constructor(
    private readonly db: Db,
    private roots: RootKeyring,
    private readonly categories: readonly string[],
  ) {}

  static async open(
    db: Db,
    roots: RootKeyring,
    categories: readonly string[],
    cacheTtlMs: number,
    notices?: KeyChangeNotices,
    onStateTampered?: (category: string, version: number) => void,
  ): Promise<Keyring> {
    const k = new Keyring(db, roots, categories);
    k.notices = notices;
    k.onStateTampered = onStateTampered;
    await k.bootstrap();
    await k.refresh();
    k.timer = setInterval(() => void k.refresh().catch(() => undefined), cacheTtlMs);
    k.timer.unref();
    k.unlisten = await db.listen(KEY_CHANGE_CHANNEL, () => void k.refresh().catch(() => undefined)).catch(() => undefined);
    k.unsubscribe = await notices?.subscribe(() => void k.refresh().catch(() => undefined));
    return k;
  }

  get rootKeys(): RootKeyring {
    return this.roots;
  }

  /**
   * Creates the fingerprint master key, the metadata MAC key and v1 of every category on first
   * start. The instance that creates the metadata key (first start of a version with KEK state
   * MACs) MACs the states already there, once; after that a KEK row without a valid MAC is refused.
   */
  private async bootstrap(): Promise<void> {
    const secret = await getSecret(this.db, FINGERPRINT_SECRET);
    const root = (secret && this.roots.byId.get(secret.rootKeyId)) || this.roots.active;
    if (!secret) await insertSecret(this.db, FINGERPRINT_SECRET, await viaRoot(wrapSecret(root, FINGERPRINT_SECRET, newKey())), root.id);
    const wrapping = (await getSecret(this.db, FINGERPRINT_SECRET))!;
    const metaRoot = this.roots.byId.get(wrapping.rootKeyId) ?? root;
    let meta = await getSecret(this.db, METADATA_SECRET);
    let created = false;
    if (!meta) {
      const mine = await viaRoot(wrapSecret(metaRoot, METADATA_SECRET, newKey()));
      await insertSecret(this.db, METADATA_SECRET, mine, metaRoot.id);
      meta = (await getSecret(this.db, METADATA_SECRET))!;
      created = Buffer.compare(Buffer.from(meta.wrapped), Buffer.from(mine)) === 0;
    }
    this.metaKey = await viaRoot(unwrapSecret(this.root(meta.rootKeyId), METADATA_SECRET, meta.wrapped));
    const rows = await listKekRows(this.db);
    if (created) {
      for (const r of rows) if (!r.stateMac) await setKekStateMac(this.db, r.category, r.version, this.stateMac(r.category, r.version, r.state));
    }
    const existing = new Set(rows.map((r) => r.category));
    for (const category of this.categories) {
      if (existing.has(category)) continue;
      const kek = newKey();
      await insertFirstKek(this.db, category, await viaRoot(wrapKek(root, category, 1, kek)), root.id, this.stateMac(category, 1, "active"));
    }
  }

  /** The MAC a KEK version's state row must carry. */
  stateMac(category: string, version: number, state: KeyState): Uint8Array {
    return kekStateMac(this.metadataKey(), { category, version, state });
  }

  private root(id: string | null) {
    const r = id ? this.roots.byId.get(id) : undefined;
    if (!r) throw new VaultError("INTERNAL", `root key ${id ?? "(none)"} is not provided; configure it to unwrap keys`);
    return r;
  }

  /**
   * Re-reads after a change this instance made: waits out a read already under way, then reads
   * again, and tells the other instances (Redis notice; best effort).
   */
  async reload(): Promise<void> {
    await this.refreshing?.catch(() => undefined);
    await this.refresh();
    await this.notices?.publish().catch(() => undefined);
  }

  /**
   * The root key that wraps the vault's keys now (the one the last root rotation chose), if this
   * instance was given it; else the provider's active root key.
   */
  wrappingRoot(): RootKey {
    return (this.currentRoot && this.roots.byId.get(this.currentRoot)) || this.roots.active;
  }

  /** A version's key material whatever its state (for re-wrapping DEKs); undefined once destroyed. */
  material(category: string, version: number): Kek | undefined {
    const v = this.byCategory.get(category)?.find((r) => r.version === version);
    return v?.key ? { version: v.version, key: v.key } : undefined;
  }

  /** Re-reads KEK rows; keeps unwrapped keys it already has. Concurrent calls share one read. */
  refresh(): Promise<void> {
    this.refreshing ??= this.load().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async load(): Promise<void> {
    const rows = await listKekRows(this.db);
    const next = new Map<string, Loaded[]>();
    for (const row of rows) {
      const old = this.byCategory.get(row.category)?.find((o) => o.version === row.version);
      let key: Uint8Array | undefined;
      if (row.wrappedKey) {
        // A root rotation re-wraps a KEK but never changes it: a key already unwrapped stays valid.
        key = old?.key ?? (await viaRoot(unwrapKek(this.root(row.rootKeyId), row.category, row.version, row.wrappedKey)));
      }
      const list = next.get(row.category) ?? [];
      // A state edited in the database (no valid MAC) is not believed: the version refuses all use.
      const tampered = !verifyKekState(this.metadataKey(), row, row.stateMac);
      if (tampered) {
        const mark = `${row.category}:${row.version}:${row.state}`;
        if (!this.reported.has(mark)) this.onStateTampered?.(row.category, row.version);
        this.reported.add(mark);
      }
      list.push({ ...row, key, tampered });
      next.set(row.category, list);
    }
    const secret = await getSecret(this.db, FINGERPRINT_SECRET);
    if (!secret) throw new VaultError("INTERNAL", "fingerprint key missing");
    if (this.fpKeys.size === 0) {
      const master = await viaRoot(unwrapSecret(this.root(secret.rootKeyId), FINGERPRINT_SECRET, secret.wrapped));
      for (const c of this.categories) this.fpKeys.set(c, fingerprintKey(master, c));
      master.fill(0);
    }
    this.currentRoot = secret.rootKeyId;
    // Key material of destroyed versions leaves memory too.
    for (const [category, list] of this.byCategory) {
      for (const o of list) {
        const now = next.get(category)?.find((r) => r.version === o.version);
        if (o.key && !now?.key) o.key.fill(0);
      }
    }
    this.byCategory = next;
  }

  /** The version that encrypts new values. */
  active(category: string): Kek {
    const v = this.byCategory.get(category)?.find((r) => r.state === "active" && !r.tampered);
    if (!v?.key) throw new VaultError("FAILED_PRECONDITION", `category ${category} has no active key`);
    return { version: v.version, key: v.key };
  }

  /** The version that wrapped a stored DEK; refuses disabled and destroyed versions. */
  forDecrypt(category: string, version: number): Kek {
    const v = this.byCategory.get(category)?.find((r) => r.version === version);
    if (!v) throw new VaultError("INTERNAL", "unknown key version");
    if (v.tampered) throw new IntegrityError();
    if (v.state === "disabled") throw new VaultError("FAILED_PRECONDITION", `key version ${version} of ${category} is disabled`);
    if (v.state === "destroyed" || !v.key) {
      throw new VaultError("FAILED_PRECONDITION", `key version ${version} of ${category} was destroyed; the value is unrecoverable`);
    }
    return { version: v.version, key: v.key };
  }

  fingerprintKey(category: string): Uint8Array {
    const k = this.fpKeys.get(category);
    if (!k) throw new VaultError("INTERNAL", "no fingerprint key for category");
    return k;
  }

  /** The key of the MACs over stored metadata (token rows, KEK states). */
  metadataKey(): Uint8Array {
    if (!this.metaKey) throw new VaultError("INTERNAL", "no metadata key");
    return this.metaKey;
  }

  versions(category: string): readonly Omit<Loaded, "key" | "wrappedKey">[] {
    return (this.byCategory.get(category) ?? []).map(({ key: _k, wrappedKey: _w, tampered: _t, ...rest }) => rest);
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.unlisten?.();
    await this.unsubscribe?.();
  }
}
