import { randomBytes } from "node:crypto";
import { newKey } from "../crypto/aead";
import type { Kek } from "../crypto/envelope";
import type { TokenIntegrity } from "../storage/ports";
import { upgradeOnRewrap } from "./rewrap-upgrade";
import { type RootKey, unwrapKek, unwrapSecret, wrapKek, wrapSecret } from "../crypto/root-key";
import { policyCaller, requireSecondCaller } from "../domain/two-person";
import { type LogDraft, logDraft } from "../domain/access-log";
import type { CategoryRegistry } from "../domain/categories";
import { type CallContext, newRequestId } from "../domain/context";
import { denied, invalid, notFound, precondition, VaultError } from "../domain/errors";
import type { Policy } from "../domain/policy";
import type { Queryable } from "../storage/db";
import {
  approveDestroyRequest,
  countTokensByVersion,
  countTokensUnder,
  currentRootKeyId,
  destroyKek,
  insertDestroyRequest,
  insertKekVersion,
  type KekRow,
  type KeyState,
  listKekRows,
  lockDestroyRequest,
  lockKekRows,
  lockLiveKeks,
  lockSecrets,
  notifyKeyChange,
  rewrapKekRow,
  setKekState,
  shareKekStates,
  updateSecret,
} from "../storage/postgres/key-store";
import { claimRewrapBatch, countUnder, storeRewrapped } from "../storage/postgres/rewrap-store";
import type { CommitQueue } from "./commit-queue";
import { FINGERPRINT_SECRET, type Keyring, RootKeyDown, viaRoot } from "./keyring";

/** A CVV lives in Redis for at most this long, so a card_cvv version is unused this long after it stopped encrypting. */
const CVV_LIFETIME_SECONDS = 3600;
/** A destroy request not approved within this time must be filed again. */
const DESTROY_REQUEST_TTL_MS = 24 * 3600 * 1000;
const DEFAULT_REWRAP_BATCH = 500;
const MAX_REWRAP_BATCH = 10_000;
const DAY_SECONDS = 86_400;
export const AUTO_ROTATE_IDENTITY = "fieldvault:auto-rotate";

export interface KeyLifecycleDeps {
  registry: Pick<CategoryRegistry, "names" | "get">;
  policy: () => Policy;
  keyring: Pick<Keyring, "reload" | "material" | "rootKeys" | "wrappingRoot" | "fingerprintKey" | "stateMac">;
  /** Checks a row's metadata MAC before re-wrapping it, and makes the new one. */
  integrity?: TokenIntegrity;
  commits: Pick<CommitQueue, "submit" | "append">;
  /** Reads outside a transaction (ListKeys, counts). */
  db: Queryable;
  instanceId: string;
  cryptoperiodDays: number;
  cryptoperiodOverrides: Readonly<Record<string, number>>;
  now?: () => Date;
}

export type SettableState = "decrypt_only" | "disabled";

export interface VersionView {
  version: number;
  state: KeyState;
  createdAt: Date;
  ageSeconds: number;
  /** Tokens in PostgreSQL whose DEK is wrapped under this version (CVVs in Redis are not counted). */
  tokens: number;
  pastCryptoperiod: boolean;
}

export interface CategoryKeysView {
  category: string;
  activeVersion: number;
  cryptoperiodSeconds: number;
  versions: VersionView[];
}

export interface RewrapProgress {
  done: number;
  remaining: number;
}

export interface DestroyOutcome {
  status: "PENDING_APPROVAL" | "DESTROYED";
  approvalId: string;
  tokensShredded: number;
}

/** What a change's work decided: a result to log and return, or a refusal to log and throw. */
type Outcome<T> = { ok: true; value: T } | { ok: false; err: VaultError };

interface BatchResult {
  rewrapped: number;
  remaining: number;
  to: number;
  from: number[];
  failed: string[];
  needKeys?: boolean;
}

/**
 * Key lifecycle use cases for security engineers: list, rotate, rewrap, retire, destroy (two-person)
 * and root key rotation, plus the cryptoperiod check behind optional automatic rotation.
 * Each change commits in the same transaction as the access-log entry that records it.
 */
export function createKeyLifecycle(deps: KeyLifecycleDeps) {
  const now = deps.now ?? (() => new Date());
  const logged = new WeakSet<object>();
  let stopping = false;
  let autoTimer: NodeJS.Timeout | undefined;

  for (const [category, days] of Object.entries(deps.cryptoperiodOverrides)) {
    if (!deps.registry.get(category)) throw new Error(`FIELDVAULT_CRYPTOPERIODS: unknown category "${category}"`);
    if (!(days > 0)) throw new Error(`FIELDVAULT_CRYPTOPERIODS: ${category} must be at least 1 day`);
  }
  const cryptoperiodSeconds = (category: string) => (deps.cryptoperiodOverrides[category] ?? deps.cryptoperiodDays) * DAY_SECONDS;
  const ageSeconds = (since: Date, at: Date) => Math.max(0, Math.floor((at.getTime() - since.getTime()) / 1000));
  const pastPeriod = (row: Pick<KekRow, "state" | "createdAt" | "category">, at: Date) =>
    row.state === "active" && ageSeconds(row.createdAt, at) > cryptoperiodSeconds(row.category);

  const draft = (ctx: CallContext, action: string, fields: Partial<LogDraft> = {}): LogDraft =>
    logDraft(ctx, deps.instanceId, now(), action, fields);
  const outcomeOf = (err: VaultError) => (err.code === "PERMISSION_DENIED" ? "denied" : err.code.toLowerCase());

  /** Only key administrators; every refusal is in the log, whatever step refused. */
  async function guard<T>(ctx: CallContext, action: string, category: string, body: () => Promise<T>): Promise<T> {
    try {
      if (!deps.policy().isKeyAdmin(ctx.identity)) throw denied(`${ctx.identity} is not a key administrator`);
      return await body();
    } catch (err) {
      if (err instanceof VaultError && !logged.has(err) && err.code !== "UNAVAILABLE") {
        await deps.commits
          .append([draft(ctx, action, { category, outcome: outcomeOf(err), detail: err.message })])
          .catch(() => undefined);
      }
      throw err;
    }
  }

  /**
   * Runs `work` in the commit queue's transaction with its access-log entry. A refusal is returned,
   * not thrown, so it never fails the other calls sharing that transaction; `work` checks everything
   * before it writes anything.
   */
  async function change<T>(
    ctx: CallContext,
    action: string,
    category: string,
    work: (tx: Queryable) => Promise<T>,
    describe: (v: T) => Partial<LogDraft> | null,
  ): Promise<T> {
    const { result } = await deps.commits.submit<Outcome<T>>({
      work: async (tx) => {
        try {
          return { ok: true, value: await work(tx) };
        } catch (err) {
          // A storage outage fails the shared transaction; a refusal, or a root key whose HSM failed, is logged.
          if (err instanceof VaultError && (err.code !== "UNAVAILABLE" || err instanceof RootKeyDown)) return { ok: false, err };
          throw err;
        }
      },
      log: (o) => {
        if (!o) return [];
        if (!o.ok) return [draft(ctx, action, { category, outcome: outcomeOf(o.err), detail: o.err.message })];
        const fields = describe(o.value);
        return fields ? [draft(ctx, action, { category, ...fields })] : [];
      },
    });
    if (!result) throw new VaultError("INTERNAL", "key change produced no result");
    if (!result.ok) {
      logged.add(result.err);
      throw result.err;
    }
    return result.value;
  }

  function knownCategory(field: string, category: string): string {
    if (!category) throw invalid(`${field}: required`);
    if (!deps.registry.get(category)) throw invalid(`${field}: unknown category`);
    return category;
  }

  function positiveVersion(version: number): number {
    if (!Number.isInteger(version) || version < 1) throw invalid("version: must be a key version number (1 or more)");
    return version;
  }

  // ---- ListKeys -------------------------------------------------------------------------------

  async function listKeys(ctx: CallContext, req: { category: string }): Promise<CategoryKeysView[]> {
    return guard(ctx, "key_list", req.category, async () => {
      const only = req.category ? knownCategory("category", req.category) : undefined;
      const [rows, counts] = await Promise.all([listKekRows(deps.db, only), countTokensByVersion(deps.db, only)]);
      const at = now();
      const out: CategoryKeysView[] = [];
      for (const category of only ? [only] : deps.registry.names()) {
        const mine = rows.filter((r) => r.category === category);
        out.push({
          category,
          activeVersion: mine.find((r) => r.state === "active")?.version ?? 0,
          cryptoperiodSeconds: cryptoperiodSeconds(category),
          versions: mine.map((r) => ({
            version: r.version,
            state: r.state,
            createdAt: r.createdAt,
            ageSeconds: ageSeconds(r.createdAt, at),
            tokens: counts.get(category)?.get(r.version) ?? 0,
            pastCryptoperiod: pastPeriod(r, at),
          })),
        });
      }
      const overdue = out.filter((c) => c.versions.some((v) => v.pastCryptoperiod)).map((c) => c.category);
      await deps.commits.append([
        draft(ctx, "key_list", { category: only ?? "", detail: `categories=${out.length} past_cryptoperiod=${overdue.join(",") || "none"}` }),
      ]);
      return out;
    });
  }

  // ---- RotateKey ------------------------------------------------------------------------------

  /** Wraps new KEKs under the root key the database's secrets are wrapped under now (read under lock). */
  async function wrappingRoot(tx: Queryable): Promise<RootKey> {
    const id = await currentRootKeyId(tx, FINGERPRINT_SECRET);
    const root = id ? deps.keyring.rootKeys.byId.get(id) : deps.keyring.wrappingRoot();
    if (!root) throw precondition(`the vault's keys are wrapped by root key ${id}, which this instance was not given`);
    return root;
  }

  /** Appends version n+1 as active and demotes the old active to decrypt_only. `when` may veto under the lock. */
  async function rotateIn(tx: Queryable, category: string, when?: (active: KekRow | undefined) => boolean) {
    const rows = await lockKekRows(tx, category);
    if (rows.length === 0) throw precondition(`category ${category} has no key versions yet`);
    const active = rows.find((r) => r.state === "active");
    if (when && !when(active)) return undefined;
    const version = Math.max(...rows.map((r) => r.version)) + 1;
    const root = await wrappingRoot(tx);
    const kek = newKey();
    const wrappedKey = await viaRoot(wrapKek(root, category, version, kek));
    kek.fill(0);
    // Demote first: the unique index allows one active version per category.
    if (active) await setKekState(tx, category, active.version, "decrypt_only", deps.keyring.stateMac(category, active.version, "decrypt_only"));
    await insertKekVersion(tx, { category, version, wrappedKey, rootKeyId: root.id, stateMac: deps.keyring.stateMac(category, version, "active") });
    await notifyKeyChange(tx, category);
    return { category, activeVersion: version, previousVersion: active?.version ?? 0 };
  }

  async function rotate(ctx: CallContext, req: { category: string }): Promise<{ category: string; activeVersion: number; previousVersion: number }> {
    return guard(ctx, "key_rotate", req.category, async () => {
      const category = knownCategory("category", req.category);
      const r = await change(ctx, "key_rotate", category, async (tx) => (await rotateIn(tx, category))!, (v) => ({
        detail: `active=v${v.activeVersion} previous=v${v.previousVersion} previous_state=decrypt_only`,
      }));
      await deps.keyring.reload();
      return r;
    });
  }

  // ---- Rewrap ---------------------------------------------------------------------------------

  async function rewrapBatch(tx: Queryable, category: string, limit: number, failed: readonly string[]): Promise<BatchResult> {
    const states = await shareKekStates(tx, category);
    const active = states.find((s) => s.state === "active");
    if (!active) throw precondition(`category ${category} has no active key version`);
    // Disabled versions refuse all use, re-wrapping included; destroyed ones have nothing to unwrap.
    const from = states.filter((s) => s.state === "decrypt_only").map((s) => s.version);
    const to = deps.keyring.material(category, active.version);
    const fromKeks = new Map<number, Kek>();
    for (const v of from) {
      const k = deps.keyring.material(category, v);
      if (k) fromKeks.set(v, k);
    }
    const empty = { rewrapped: 0, remaining: 0, to: active.version, from: [], failed: [] };
    if (!to || fromKeks.size < from.length) return { ...empty, needKeys: true };
    const claimed = (await claimRewrapBatch(tx, category, from, limit + failed.length)).filter((c) => !failed.includes(c.id)).slice(0, limit);
    const updated: Parameters<typeof storeRewrapped>[2][number][] = [];
    const newlyFailed: string[] = [];
    for (const c of claimed) {
      try {
        updated.push(upgradeOnRewrap({ registry: deps.registry, keyring: deps.keyring, integrity: deps.integrity }, fromKeks.get(c.kekVersion)!, to, c));
      } catch {
        newlyFailed.push(c.id); // a damaged wrapped DEK or tampered row stays as it is, for an operator to look at
      }
    }
    const rewrapped = await storeRewrapped(tx, active.version, updated);
    const remaining = await countUnder(tx, category, from);
    return { rewrapped, remaining, to: active.version, from: [...new Set(claimed.map((c) => c.kekVersion))], failed: newlyFailed };
  }

  /**
   * Re-wraps DEKs under non-active (decrypt_only) versions onto the active version, one committed
   * batch at a time, until none is left. Several instances may run it at once (SKIP LOCKED); a
   * stopped run leaves the rest for the next one. Values are never decrypted.
   */
  async function rewrap(
    ctx: CallContext,
    req: { category: string; batchSize: number },
    onProgress: (p: RewrapProgress) => Promise<void>,
    cancelled: () => boolean = () => false,
  ): Promise<RewrapProgress> {
    return guard(ctx, "key_rewrap", req.category, async () => {
      const category = knownCategory("category", req.category);
      const limit = req.batchSize || DEFAULT_REWRAP_BATCH;
      if (limit > MAX_REWRAP_BATCH) throw invalid(`batch_size: at most ${MAX_REWRAP_BATCH}`);
      const started = performance.now();
      let done = 0;
      let remaining = 0;
      let reported: RewrapProgress | undefined;
      const failed: string[] = [];
      let interrupted = false;
      let reloads = 0;
      for (;;) {
        if (cancelled() || stopping) {
          interrupted = true;
          break;
        }
        const b = await change(ctx, "key_rewrap_batch", category, (tx) => rewrapBatch(tx, category, limit, failed), (r) =>
          r.rewrapped > 0 || r.failed.length > 0
            ? { detail: `rewrapped=${r.rewrapped} to=v${r.to} from=${r.from.map((v) => `v${v}`).join(",")} failed=${r.failed.length}` }
            : null,
        );
        if (b.needKeys) {
          // This instance has not loaded a version the database already has: read again and retry.
          if (++reloads > 5) throw new VaultError("INTERNAL", "key versions could not be loaded for rewrap");
          await deps.keyring.reload();
          continue;
        }
        failed.push(...b.failed);
        done += b.rewrapped;
        remaining = Math.max(0, b.remaining - failed.length);
        if (b.rewrapped > 0) {
          reported = { done, remaining };
          await onProgress(reported);
        }
        if (remaining === 0) break;
        // Everything left is claimed by another instance right now: wait for it, then look again.
        if (b.rewrapped === 0 && b.failed.length === 0) await new Promise((r) => setTimeout(r, 100));
      }
      if (!reported || reported.done !== done || reported.remaining !== remaining) await onProgress({ done, remaining });
      const seconds = (performance.now() - started) / 1000;
      await deps.commits.append([
        draft(ctx, "key_rewrap", {
          category,
          outcome: interrupted ? "interrupted" : "ok",
          detail: `rewrapped=${done} remaining=${remaining} failed=${failed.length} seconds=${seconds.toFixed(1)}`,
        }),
      ]);
      return { done, remaining };
    });
  }

  // ---- SetKeyVersionState ---------------------------------------------------------------------

  async function setState(
    ctx: CallContext,
    req: { category: string; version: number; state: string },
  ): Promise<{ category: string; version: number; state: SettableState }> {
    return guard(ctx, "key_state", req.category, async () => {
      const category = knownCategory("category", req.category);
      const version = positiveVersion(req.version);
      if (req.state === "active") throw invalid("state: a version becomes active only by RotateKey");
      if (req.state === "destroyed") throw invalid("state: use DestroyKeyVersion to destroy a version");
      if (req.state !== "decrypt_only" && req.state !== "disabled") throw invalid("state: must be decrypt_only or disabled");
      const target: SettableState = req.state;
      const r = await change(
        ctx,
        "key_state",
        category,
        async (tx) => {
          const row = (await lockKekRows(tx, category)).find((x) => x.version === version);
          if (!row) throw notFound(`${category} has no key version ${version}`);
          if (row.state === "destroyed") throw precondition(`key version ${version} of ${category} was destroyed; destruction is final`);
          if (row.state === "active") {
            throw precondition(`key version ${version} is the active version of ${category}; rotate first, then retire it`);
          }
          if (row.state !== target) {
            await setKekState(tx, category, version, target, deps.keyring.stateMac(category, version, target));
            await notifyKeyChange(tx, category);
          }
          return { category, version, state: target, previous: row.state };
        },
        (v) => ({ detail: `version=v${v.version} state=${v.previous}->${v.state}` }),
      );
      await deps.keyring.reload();
      return { category: r.category, version: r.version, state: r.state };
    });
  }

  // ---- DestroyKeyVersion ----------------------------------------------------------------------

  /** What must hold, at request and again at approval, before a version may be destroyed. */
  async function checkDestroyable(tx: Queryable, category: string, version: number, cryptoShred: boolean): Promise<number> {
    const row = (await lockKekRows(tx, category)).find((x) => x.version === version);
    if (!row) throw notFound(`${category} has no key version ${version}`);
    if (row.state === "destroyed") throw precondition(`key version ${version} of ${category} is already destroyed`);
    if (row.state === "active") throw precondition(`key version ${version} is the active version of ${category}; rotate and rewrap first`);
    const tokens = await countTokensUnder(tx, category, version);
    if (tokens > 0 && !cryptoShred) {
      throw precondition(
        `${tokens} token(s) of ${category} are still wrapped under version ${version}; run rewrap first, or set crypto_shred to make their values unrecoverable`,
      );
    }
    if (deps.registry.get(category)?.storage === "redis" && !cryptoShred && ageSeconds(row.stateChangedAt, now()) < CVV_LIFETIME_SECONDS) {
      throw precondition(
        `${category} values live in Redis for up to ${CVV_LIFETIME_SECONDS / 60} minutes; version ${version} may be destroyed an hour after it stopped encrypting (or set crypto_shred)`,
      );
    }
    return tokens;
  }

  async function destroy(
    ctx: CallContext,
    req: { category: string; version: number; approvalId: string; cryptoShred: boolean },
  ): Promise<DestroyOutcome> {
    const action = req.approvalId ? "key_destroy" : "key_destroy_request";
    return guard(ctx, action, req.category, async () => {
      const category = knownCategory("category", req.category);
      const version = positiveVersion(req.version);
      const shred = req.cryptoShred;
      if (!req.approvalId) {
        return change(
          ctx,
          action,
          category,
          async (tx) => {
            const tokens = await checkDestroyable(tx, category, version, shred);
            const approvalId = "dr_" + randomBytes(12).toString("base64url");
            await insertDestroyRequest(tx, { id: approvalId, category, version, cryptoShred: shred, requestedBy: ctx.identity, requesterCaller: policyCaller(deps.policy(), ctx.identity) });
            return { status: "PENDING_APPROVAL" as const, approvalId, tokensShredded: 0, tokens };
          },
          (v) => ({ outcome: "pending_approval", detail: `version=v${version} crypto_shred=${shred} tokens=${v.tokens} approval_id=${v.approvalId}` }),
        ).then(({ tokens: _t, ...out }) => out);
      }
      if (!/^dr_[A-Za-z0-9_-]{1,64}$/.test(req.approvalId)) throw invalid("approval_id: not a destroy request id");
      const out = await change(
        ctx,
        action,
        category,
        async (tx) => {
          const r = await lockDestroyRequest(tx, req.approvalId);
          if (!r) throw notFound(`approval_id: no destroy request ${req.approvalId}`);
          if (r.approvedBy) throw precondition(`destroy request ${r.id} was already approved by ${r.approvedBy}`);
          if (r.category !== category || r.version !== version || r.cryptoShred !== shred) {
            throw invalid(
              `approval_id: request ${r.id} is for ${r.category} version ${r.version} with crypto_shred=${r.cryptoShred}; repeat exactly that request`,
            );
          }
          // Compared by policy caller: two certificates (or the header) of one caller are one person.
          const approver = policyCaller(deps.policy(), ctx.identity);
          const requester = r.requesterCaller ?? deps.policy().callerName(r.requestedBy) ?? r.requestedBy;
          requireSecondCaller(requester, approver, `destroy needs a second key administrator: policy caller ${approver} filed request ${r.id}`);
          if (now().getTime() - r.requestedAt.getTime() > DESTROY_REQUEST_TTL_MS) {
            throw precondition(`destroy request ${r.id} is older than 24 hours; file a new one`);
          }
          const tokens = await checkDestroyable(tx, category, version, shred);
          await destroyKek(tx, category, version, deps.keyring.stateMac(category, version, "destroyed"));
          await approveDestroyRequest(tx, r.id, ctx.identity, approver);
          await notifyKeyChange(tx, category);
          return { status: "DESTROYED" as const, approvalId: r.id, tokensShredded: tokens, requestedBy: r.requestedBy };
        },
        (v) => ({
          outcome: "destroyed",
          detail: `version=v${version} crypto_shred=${shred} tokens_shredded=${v.tokensShredded} approval_id=${v.approvalId} requested_by=${v.requestedBy}`,
        }),
      );
      await deps.keyring.reload();
      return { status: out.status, approvalId: out.approvalId, tokensShredded: out.tokensShredded };
    });
  }

  // ---- RotateRootKey --------------------------------------------------------------------------

  async function rotateRoot(ctx: CallContext, req: { newRootKeyId: string }): Promise<{ rootKeyId: string; keksRewrapped: number }> {
    return guard(ctx, "root_rotate", "", async () => {
      const id = req.newRootKeyId.trim();
      if (!id) throw invalid("new_root_key_id: required");
      const roots = deps.keyring.rootKeys;
      const target = roots.byId.get(id);
      if (!target) {
        throw precondition(`new_root_key_id: root key ${id} is not loaded by the key provider; give it to every instance first`);
      }
      const rootOf = (rid: string | null, what: string): RootKey => {
        const r = rid ? roots.byId.get(rid) : undefined;
        if (!r) throw precondition(`${what} is wrapped by root key ${rid ?? "(none)"}, which this instance was not given`);
        return r;
      };
      const out = await change(
        ctx,
        "root_rotate",
        "",
        async (tx) => {
          const keks = await lockLiveKeks(tx);
          const secrets = await lockSecrets(tx);
          // Unwrap and re-wrap everything first; write only when all of it worked.
          const kekWrites: { row: KekRow; wrapped: Uint8Array }[] = [];
          for (const row of keks) {
            const key = await viaRoot(unwrapKek(rootOf(row.rootKeyId, `${row.category} v${row.version}`), row.category, row.version, row.wrappedKey!));
            try {
              kekWrites.push({ row, wrapped: await viaRoot(wrapKek(target, row.category, row.version, key)) });
            } finally {
              key.fill(0);
            }
          }
          const secretWrites: { name: string; wrapped: Uint8Array }[] = [];
          for (const s of secrets) {
            const secret = await viaRoot(unwrapSecret(rootOf(s.rootKeyId, `secret ${s.name}`), s.name, s.wrapped));
            try {
              secretWrites.push({ name: s.name, wrapped: await viaRoot(wrapSecret(target, s.name, secret)) });
            } finally {
              secret.fill(0);
            }
          }
          const previous = [...new Set([...keks.map((k) => k.rootKeyId), ...secrets.map((s) => s.rootKeyId)])].filter((x) => x !== id);
          for (const w of kekWrites) await rewrapKekRow(tx, w.row.category, w.row.version, w.wrapped, id);
          for (const w of secretWrites) await updateSecret(tx, w.name, w.wrapped, id);
          await notifyKeyChange(tx, "*");
          return { rootKeyId: id, keksRewrapped: kekWrites.length, secrets: secretWrites.length, previous };
        },
        (v) => ({
          detail: `root=${v.rootKeyId} previous=${v.previous.join(",") || "none"} keks_rewrapped=${v.keksRewrapped} secrets_rewrapped=${v.secrets}`,
        }),
      );
      await deps.keyring.reload();
      return { rootKeyId: out.rootKeyId, keksRewrapped: out.keksRewrapped };
    });
  }

  // ---- Cryptoperiod and automatic rotation ----------------------------------------------------

  /**
   * Rotates every category whose active version is past its cryptoperiod. The age is checked again
   * under the category's row lock, so instances racing here rotate once between them.
   */
  async function rotateOverdue(): Promise<string[]> {
    const at = now();
    const due = (await listKekRows(deps.db)).filter((r) => pastPeriod(r, at)).map((r) => r.category);
    const rotated: string[] = [];
    for (const category of due) {
      const ctx: CallContext = { identity: AUTO_ROTATE_IDENTITY, auth: "internal", peer: deps.instanceId, requestId: newRequestId() };
      const r = await change(
        ctx,
        "key_rotate",
        category,
        (tx) => rotateIn(tx, category, (active) => !!active && pastPeriod(active, now())),
        (v) => (v ? { detail: `automatic: cryptoperiod passed; active=v${v.activeVersion} previous=v${v.previousVersion}` } : null),
      );
      if (r) rotated.push(category);
    }
    if (rotated.length) await deps.keyring.reload();
    return rotated;
  }

  function startAutoRotation(intervalMs: number, onError: (err: unknown) => void): void {
    autoTimer = setInterval(() => void rotateOverdue().catch(onError), intervalMs);
    autoTimer.unref();
  }

  /** Stops the timer and asks running rewraps to stop after their current batch. */
  function stop(): void {
    stopping = true;
    if (autoTimer) clearInterval(autoTimer);
  }

  return { listKeys, rotate, rewrap, setState, destroy, rotateRoot, rotateOverdue, startAutoRotation, stop };
}

export type KeyLifecycle = ReturnType<typeof createKeyLifecycle>;
