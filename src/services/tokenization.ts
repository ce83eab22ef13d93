import { cvvBinding, fingerprintBinding, type Kek, openValue, sealValue } from "../crypto/envelope";
import { fingerprint } from "../crypto/fingerprint";
import { newToken } from "../crypto/tokens";
import { type LogDraft, logDraft } from "../domain/access-log";
import { cardLifetimes } from "../domain/card-lifetime";
import type { CategoryRegistry, MaskedView } from "../domain/categories";
import type { CallContext } from "../domain/context";
import { DependencyError, denied, IntegrityError, invalid, VaultError } from "../domain/errors";
import type { Policy } from "../domain/policy";
import { aliasFits, isOpaqueToken, isWellFormedToken, loggableToken, panShape, type PanShape, PRESERVING_CATEGORIES, type TokenFormat } from "../domain/token-formats";
import type { Queryable } from "../storage/db";
import { type CvvRecord, type CvvStore, type NewToken, type RateLimiter, type TokenIntegrity, type TokenRecord, untilNextBudgetWindow } from "../storage/ports";
import { deleteTokens } from "../storage/postgres/token-store";
import type { BreakGlass } from "./break-glass";
import type { CommitQueue } from "./commit-queue";
import { CVV_MAX_TTL_SECONDS, createCvvSingleUse, openCvv } from "./cvv-single-use";
import type { Keyring } from "./keyring";
import { createTokenizeBudget } from "./tokenize-budget";
import { batchLookups } from "./lookup-batcher";

export { CVV_MAX_TTL_SECONDS };
const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;
const MAX_TEXT = 512;

export interface TokenizationDeps {
  registry: CategoryRegistry;
  policy: () => Policy;
  keyring: Pick<Keyring, "active" | "forDecrypt" | "fingerprintKey">;
  commits: Pick<CommitQueue, "submit" | "append">;
  findTokens: (ids: readonly string[]) => Promise<Map<string, TokenRecord>>;
  /** Checks each stored row's metadata MAC before the vault acts on it. */
  integrity: Pick<TokenIntegrity, "intact">;
  cvv: CvvStore;
  rateLimiter: RateLimiter;
  instanceId: string;
  maxBatch: number;
  cvvTtlSeconds: number;
  /** Days a card's tokens outlive its expiry month when no ttl_seconds is given (DESIGN §13). */
  cardRetentionDays: number;
  /** Gives token rows their format-preserving alias inside the commit (storage/postgres/alias-store.ts). */
  assignAliases: (tx: Queryable, wants: readonly { tokenId: string; shape: PanShape }[]) => Promise<Map<string, string>>;
  now?: () => Date;
  /** Break-glass grants Detokenize may consult (DESIGN §15). */
  breakGlass?: Pick<BreakGlass, "open" | "revealed">;
  /** Told about each detokenize item once its log entry committed (metrics); never given a value. */
  onDetokenized?: (e: { identity: string; category: string; purpose: string; outcome: string }) => void;
  /** Told how many deterministic fields a caller's tokenize took from its budget (metrics). */
  onDeterministicTokenize?: (e: { identity: string; category: string; fields: number }) => void;
}

export interface TokenizedField {
  token: string;
  category: string;
  masked: MaskedView;
  expiresAt: Date | null;
}

export type ItemResult<T> = ({ ok: true } & T) | { ok: false; code: string; message: string };
export type DetokenizeItem = { token: string; category: string } & ({ ok: true; value: string } | { ok: false; code: string; message: string; retryAfterMs?: number });
export type InspectItem = ItemResult<{ token: string; category: string; masked: MaskedView; createdAt: Date; expiresAt: Date | null; keyVersion: number }> & { token: string };

/** A stored envelope from either store, with what the policy and the log need to know. */
interface Found {
  /** The stored token id (what the ciphertext's AAD binds), whichever form of token found it. */
  id: string;
  category: string;
  kekVersion: number;
  wrappedDek: Uint8Array;
  ciphertext: Uint8Array;
  masked?: MaskedView;
  fingerprint?: Uint8Array | null;
  createdAt: Date;
  expiresAt: Date | null;
  inRedis: boolean;
  /** False when a PostgreSQL row's metadata failed its MAC: nothing about it may be trusted. */
  intact: boolean;
}

/** A PostgreSQL row as a Found, built field by field (a spread per token showed in Detokenize's profile). */
const fromPostgres = (r: TokenRecord, intact: boolean): Found => ({
  id: r.id,
  category: r.category,
  kekVersion: r.kekVersion,
  wrappedDek: r.wrappedDek,
  ciphertext: r.ciphertext,
  masked: r.masked,
  fingerprint: r.fingerprint,
  createdAt: r.createdAt,
  expiresAt: r.expiresAt,
  inRedis: false,
  intact,
});

const utf8 = new TextEncoder();
const utf8d = new TextDecoder("utf-8", { fatal: true });

function checkText(field: string, value: string, required: boolean): void {
  if (required && value.trim().length === 0) throw invalid(`${field}: required`); // only spaces is not a purpose
  if (value.length > MAX_TEXT) throw invalid(`${field}: longer than ${MAX_TEXT} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalid(`${field}: contains control characters`);
}

function checkCount(field: string, n: number, max: number): void {
  if (n === 0) throw invalid(`${field}: must not be empty`);
  if (n > max) throw invalid(`${field}: at most ${max} items per call`);
}

/** Tokenize, detokenize, inspect and erase: the vault's use cases. Transport-free and SQL-free. */
export function createTokenization(deps: TokenizationDeps) {
  // Concurrent calls' lookups share one query.
  const findTokens = batchLookups(deps.findTokens);
  const now = deps.now ?? (() => new Date());
  const cvvOnce = createCvvSingleUse({ cvv: deps.cvv });
  const budget = createTokenizeBudget({ policy: deps.policy, rateLimiter: deps.rateLimiter, onVolume: deps.onDeterministicTokenize });

  const draft = (ctx: CallContext, action: string, fields: Partial<LogDraft> = {}): LogDraft =>
    logDraft(ctx, deps.instanceId, now(), action, fields);

  /**
   * Runs a use case for a caller the policy knows. A refusal (bad input, not permitted) is logged
   * before its error is thrown, so it is recorded even though nothing else is.
   */
  async function guard<T>(ctx: CallContext, action: string, body: () => Promise<T>): Promise<T> {
    try {
      if (deps.policy().callerName(ctx.identity) === undefined) throw denied(`caller ${ctx.identity} is not in the policy`);
      return await body();
    } catch (err) {
      if (err instanceof VaultError && err.code in REFUSALS) {
        const outcome = REFUSALS[err.code]!;
        await deps.commits.append([draft(ctx, action, { outcome, detail: err.message })]).catch(() => undefined);
      }
      throw err;
    }
  }

  async function tokenize(
    ctx: CallContext,
    req: { fields: readonly { category: string; value: string; tokenFormat?: TokenFormat | "unknown" }[]; ttlSeconds: number; subjectRef: string },
  ): Promise<TokenizedField[]> {
    return guard(ctx, "tokenize", async () => {
      checkCount("fields", req.fields.length, deps.maxBatch);
      if (req.ttlSeconds > MAX_TTL_SECONDS) throw invalid(`ttl_seconds: at most ${MAX_TTL_SECONDS}`);
      checkText("subject_ref", req.subjectRef, false);
      const policy = deps.policy();
      const at = now();
      const specs = req.fields.map((f, i) => {
        const spec = deps.registry.get(f.category);
        if (!spec) throw invalid(`fields[${i}].category: unknown category`);
        if (!policy.canTokenize(ctx.identity, spec.name)) throw denied(`fields[${i}]: may not tokenize ${spec.name}`);
        if (f.tokenFormat === "unknown") throw invalid(`fields[${i}].token_format: unknown token format`);
        if (f.tokenFormat === "preserving" && !PRESERVING_CATEGORIES.has(spec.name)) {
          throw invalid(`fields[${i}].token_format (${spec.name}): TOKEN_FORMAT_PRESERVING is only for card_number`);
        }
        return spec;
      });
      const normalised = req.fields.map((f, i) => {
        const n = specs[i]!.normalise(f.value, at);
        if (!n.ok) throw invalid(`fields[${i}] (${specs[i]!.name}): ${n.reason}`);
        return n.value;
      });
      await budget.take(ctx.identity, specs);

      const lifetimes = req.ttlSeconds ? [] : cardLifetimes(specs.map((s, i) => ({ category: s.name, value: normalised[i]! })), deps.cardRetentionDays);
      const preserving: { row: number; out: number; shape: PanShape }[] = [];

      const keks = new Map<string, Kek>();
      const rows: NewToken[] = [];
      const cvvs: { token: string; record: CvvRecord }[] = [];
      const out: TokenizedField[] = [];
      const rowOf: number[] = []; // rows[r] answers out[rowOf[r]]
      normalised.forEach((value, i) => {
        const spec = specs[i]!;
        const kek = keks.get(spec.name) ?? deps.keyring.active(spec.name);
        keks.set(spec.name, kek);
        const id = newToken();
        const plain = utf8.encode(value);
        const masked = spec.mask(value, at);
        if (spec.storage === "redis") {
          const ttl = Math.min(req.ttlSeconds || deps.cvvTtlSeconds, CVV_MAX_TTL_SECONDS);
          const expiresAt = new Date(at.getTime() + ttl * 1000);
          const sealed = sealValue(kek, id, spec.name, plain, cvvBinding(at, expiresAt));
          plain.fill(0);
          cvvs.push({ token: id, record: { ...sealed, createdAt: at, expiresAt } });
          out.push({ token: id, category: spec.name, masked, expiresAt });
          return;
        }
        const fp = spec.tokenKind === "deterministic" ? fingerprint(deps.keyring.fingerprintKey(spec.name), plain) : null;
        const sealed = sealValue(kek, id, spec.name, plain, fingerprintBinding(fp));
        plain.fill(0);
        const expiresAt = req.ttlSeconds ? new Date(at.getTime() + req.ttlSeconds * 1000) : (lifetimes[i] ?? null);
        if (req.fields[i]!.tokenFormat === "preserving") preserving.push({ row: rows.length, out: out.length, shape: panShape(value) });
        rowOf.push(out.length);
        rows.push({
          id,
          category: spec.name,
          ...sealed,
          fingerprint: fp,
          masked,
          createdAt: at,
          expiresAt,
          subjectRef: req.subjectRef || null,
          subjectCaller: policy.callerName(ctx.identity),
        });
        out.push({ token: id, category: spec.name, masked, expiresAt });
      });

      // CVVs first: if the database commit then fails, they are removed again (and expire anyway).
      if (cvvs.length) await deps.cvv.put(cvvs);
      const categories = [...new Set(specs.map((s) => s.name))].join(",");
      try {
        const { tokenIds, result: aliases } = await deps.commits.submit({
          tokens: rows,
          work: preserving.length
            ? (tx, ids) => deps.assignAliases(tx, preserving.map((p) => ({ tokenId: ids[p.row]!, shape: p.shape })))
            : undefined,
          // One entry per token handed out, so the log answers "who created (or was handed) this token".
          log: (_r, tokenIds) => {
            const ids = out.map((o) => o.token);
            rowOf.forEach((outIndex, r) => (ids[outIndex] = tokenIds[r]!));
            const own = new Set(rows.map((row) => row.id));
            const existing = new Set(tokenIds.filter((id) => !own.has(id)));
            const seen = new Set<string>();
            const drafts = ids.flatMap((token, i) => {
              if (seen.has(token)) return [];
              seen.add(token);
              const detail = `fields=${req.fields.length}${existing.has(token) ? " existing" : ""}`;
              return [draft(ctx, "tokenize", { category: out[i]!.category, token, detail })];
            });
            return drafts.length ? drafts : [draft(ctx, "tokenize", { category: categories, detail: `fields=${req.fields.length}` })];
          },
        });
        // Deterministic tokens resolve to the id already holding the value.
        rowOf.forEach((outIndex, r) => (out[outIndex]!.token = tokenIds[r]!));
        for (const p of preserving) out[p.out]!.token = aliases!.get(tokenIds[p.row]!)!;
      } catch (err) {
        if (cvvs.length) await deps.cvv.remove(cvvs.map((c) => c.token)).catch(() => undefined);
        throw err;
      }
      return out;
    });
  }

  /**
   * Finds tokens in PostgreSQL, then the rest among CVVs (without consuming them). With
   * `tolerateCacheOutage`, a Redis outage fails only the tokens PostgreSQL did not know
   * (`cacheDown`), so every other category keeps working.
   */
  async function lookup(
    tokens: readonly string[],
    tolerateCacheOutage = false,
  ): Promise<Map<string, Found> & { cacheDown?: boolean }> {
    const wellFormed = [...new Set(tokens.filter(isWellFormedToken))];
    const found: Map<string, Found> & { cacheDown?: boolean } = new Map<string, Found>();
    for (const [id, r] of await findTokens(wellFormed)) found.set(id, fromPostgres(r, deps.integrity.intact(r)));
    const rest = wellFormed.filter((t) => !found.has(t) && isOpaqueToken(t));
    if (rest.length) {
      try {
        for (const [id, r] of await deps.cvv.peek(rest)) {
          found.set(id, { ...r, id, category: "card_cvv", inRedis: true, intact: true });
        }
      } catch (err) {
        if (!tolerateCacheOutage || !(err instanceof DependencyError)) throw err;
        found.cacheDown = true;
      }
    }
    return found;
  }

  async function detokenize(
    ctx: CallContext,
    req: { tokens: readonly string[]; purpose: string; justification: string; breakGlassId?: string },
  ): Promise<DetokenizeItem[]> {
    return guard(ctx, "detokenize", async () => {
      checkCount("tokens", req.tokens.length, deps.maxBatch);
      checkText("purpose", req.purpose, true);
      checkText("justification", req.justification, false);
      const policy = deps.policy();
      const at = now();
      // A named break-glass grant must be this caller's, approved, unexpired and for this purpose.
      const grant = req.breakGlassId ? await deps.breakGlass!.open(ctx, req.breakGlassId, req.purpose) : undefined;
      const viaGrant = new Set<number>();
      const found = await lookup(req.tokens, true);

      // Decide each item: existence, policy, expiry; then rate budgets per category.
      type Pending = { i: number; f: Found };
      const results: DetokenizeItem[] = new Array(req.tokens.length);
      const outcomes: string[] = new Array(req.tokens.length).fill("allowed");
      const fail = (i: number, category: string, code: string, message: string, outcome = OUTCOMES[code] ?? "error") => {
        const r = { token: req.tokens[i]!, category, ok: false as const, code, message };
        results[i] = r;
        outcomes[i] = outcome;
        return r;
      };
      const allowedByCategory = new Map<string, Pending[]>();
      req.tokens.forEach((token, i) => {
        const f = found.get(token);
        if (!f && found.cacheDown && isOpaqueToken(token)) return fail(i, "", "UNAVAILABLE", "token store unavailable", "unavailable");
        if (!f) return fail(i, "", "NOT_FOUND", "unknown or erased token");
        if (!f.intact) return fail(i, "", "INTERNAL", "value could not be decrypted");
        if (!policy.isPurpose(req.purpose) || !policy.canDetokenize(ctx.identity, f.category, req.purpose)) {
          if (grant?.covers(f.category)) viaGrant.add(i);
          else return fail(i, f.category, "PERMISSION_DENIED", `purpose ${policy.isPurpose(req.purpose) ? req.purpose : "(undeclared)"} does not allow ${f.category} for this caller${grant ? ` (break_glass_id=${grant.id} does not cover it)` : ""}`);
        }
        if (f.expiresAt && f.expiresAt <= at) return fail(i, f.category, "FAILED_PRECONDITION", "token has expired", "expired");
        const list = allowedByCategory.get(f.category) ?? [];
        list.push({ i, f });
        allowedByCategory.set(f.category, list);
      });
      const limit = policy.detokenizePerMinute(ctx.identity);
      const cvvIndex = new Map<string, number>(); // CVV token → the one item that may reveal it
      for (const [category, items] of allowedByCategory) {
        // Keyed by policy caller, so two identities of one caller share one budget.
        const granted = await deps.rateLimiter.take(`${policy.callerName(ctx.identity) ?? ctx.identity}:${category}`, limit, items.length);
        // When the budget comes back, so a caller can wait instead of guessing.
        const retryAfterMs = granted < items.length ? untilNextBudgetWindow() : 0;
        for (const { i } of items.slice(granted)) Object.assign(fail(i, category, "RESOURCE_EXHAUSTED", "rate budget exceeded"), { retryAfterMs });
        for (const { i, f } of items.slice(0, granted)) {
          const token = req.tokens[i]!;
          try {
            const kek = deps.keyring.forDecrypt(category, f.kekVersion);
            let plain: Uint8Array;
            if (f.inRedis) {
              // Single use: a second item of this call naming the same CVV gets nothing.
              if (cvvIndex.has(token)) {
                fail(i, category, "NOT_FOUND", "unknown or erased token");
                continue;
              }
              const opened = openCvv(kek, token, { ...f, expiresAt: f.expiresAt! }, at);
              if (!opened.ok) {
                fail(i, category, opened.code, opened.message, opened.outcome);
                continue;
              }
              cvvIndex.set(token, i);
              plain = opened.plain;
            } else {
              plain = openValue(kek, f.id, category, f, fingerprintBinding(f.fingerprint));
            }
            const value = utf8d.decode(plain);
            plain.fill(0);
            // An alias moved to another row (by whoever can write the database) reveals nothing.
            if (f.id !== token && !aliasFits(token, value)) fail(i, category, "INTERNAL", "value could not be decrypted");
            else results[i] = { token, category, ok: true, value };
          } catch (err) {
            if (err instanceof VaultError && err.code === "FAILED_PRECONDITION") fail(i, category, err.code, err.message);
            else if (err instanceof VaultError && err.code === "UNAVAILABLE") throw err;
            else fail(i, category, "INTERNAL", "value could not be decrypted");
          }
        }
      }

      // Durable before reveal: values leave only after these entries are committed. A CVV is
      // marked consumed in the same transaction; one already marked is withheld (and logged so).
      const drafts = () =>
        results.map((r, i) =>
          draft(ctx, "detokenize", {
            category: r.category,
            token: loggableToken(r.token),
            purpose: req.purpose,
            justification: req.justification,
            outcome: outcomes[i]!,
            detail: r.ok ? (viaGrant.has(i) ? `break_glass_id=${grant!.id}` : "") : r.message,
          }),
        );
      const cvvTokens = [...cvvIndex.keys()];
      if (cvvTokens.length === 0) await deps.commits.append(drafts());
      else {
        await deps.commits.submit({
          work: cvvOnce.consume(cvvTokens),
          log: (fresh) => {
            for (const [token, i] of cvvIndex) if (!fresh?.has(token)) fail(i, "card_cvv", "NOT_FOUND", "unknown or erased token");
            return drafts();
          },
        });
        await cvvOnce.discard(cvvTokens);
      }
      for (const i of viaGrant) if (results[i]!.ok) deps.breakGlass!.revealed(ctx, grant!, results[i]!.category, req.purpose);
      results.forEach((r, i) => deps.onDetokenized?.({ identity: ctx.identity, category: r.category, purpose: req.purpose, outcome: outcomes[i]! }));
      return results;
    });
  }

  async function inspect(ctx: CallContext, req: { tokens: readonly string[] }): Promise<InspectItem[]> {
    return guard(ctx, "inspect", async () => {
      checkCount("tokens", req.tokens.length, deps.maxBatch);
      const policy = deps.policy();
      const found = await lookup(req.tokens);
      const at = now();
      const items = req.tokens.map((token): InspectItem => {
        const f = found.get(token);
        if (!f) return { token, ok: false, code: "NOT_FOUND", message: "unknown or erased token" };
        if (!f.intact) return { token, ok: false, code: "INTERNAL", message: "token could not be read" };
        if (!policy.canInspect(ctx.identity, f.category)) {
          return { token, ok: false, code: "PERMISSION_DENIED", message: `may not inspect ${f.category}` };
        }
        const spec = deps.registry.get(f.category);
        let masked = f.masked ?? spec?.mask("", at) ?? { display: "", brand: "", last: "", expired: false };
        if (spec?.dynamicMask) {
          try {
            const plain = openValue(deps.keyring.forDecrypt(f.category, f.kekVersion), f.id, f.category, f, fingerprintBinding(f.fingerprint));
            masked = spec.mask(utf8d.decode(plain), at);
            plain.fill(0);
          } catch (err) {
            const code = err instanceof VaultError ? err.code : "INTERNAL";
            return { token, ok: false, code, message: "masked view unavailable: key version not usable" };
          }
        }
        return { token, ok: true, category: f.category, masked, createdAt: f.createdAt, expiresAt: f.expiresAt, keyVersion: f.kekVersion };
      });
      await deps.commits.append([draft(ctx, "inspect", { detail: `tokens=${req.tokens.length}` })]);
      return items;
    });
  }

  async function erase(ctx: CallContext, req: { tokens: readonly string[] }): Promise<number> {
    return guard(ctx, "delete", async () => {
      checkCount("tokens", req.tokens.length, deps.maxBatch);
      const policy = deps.policy();
      const found = await lookup(req.tokens);
      for (const [token, f] of found) {
        if (!f.intact) throw new IntegrityError();
        if (!policy.canDelete(ctx.identity, f.category)) throw denied(`tokens: may not delete ${f.category} (${token})`);
      }
      const redisTokens = [...found].filter(([, f]) => f.inRedis).map(([t]) => t);
      // Either form of a token names its one row; the log names the token as given (and the stored id when they differ).
      const pgTokens = [...new Set([...found.values()].filter((f) => !f.inRedis).map((f) => f.id))];
      const categoryOf = new Map([...found.values()].map((f) => [f.id, f.category]));
      const asGiven = new Map([...found].map(([t, f]) => [f.id, t]));
      const removedCvvs = redisTokens.length ? await deps.cvv.remove(redisTokens) : 0;
      const { result } = await deps.commits.submit({
        work: (tx: Queryable) => deleteTokens(tx, pgTokens),
        log: (ids) => [
          ...(ids ?? []).map((id) =>
            draft(ctx, "delete", { token: asGiven.get(id)!, category: categoryOf.get(id)!, outcome: "erased", detail: asGiven.get(id) === id ? "" : `stored as ${id}` }),
          ),
          ...redisTokens.map((token) => draft(ctx, "delete", { token, category: "card_cvv", outcome: "erased" })),
          draft(ctx, "delete", { detail: `requested=${req.tokens.length} erased=${(ids?.length ?? 0) + removedCvvs}` }),
        ],
      });
      return (result?.length ?? 0) + removedCvvs;
    });
  }

  return { tokenize, detokenize, inspect, erase };
}

/** Refusals the guard logs before throwing, with their outcome. */
const REFUSALS: Record<string, string> = { PERMISSION_DENIED: "denied", INVALID_ARGUMENT: "invalid_argument", RESOURCE_EXHAUSTED: "rate_limited" };

const OUTCOMES: Record<string, string> = {
  NOT_FOUND: "not_found",
  PERMISSION_DENIED: "denied",
  FAILED_PRECONDITION: "key_unavailable",
  RESOURCE_EXHAUSTED: "rate_limited",
  INTERNAL: "error",
};

export type Tokenization = ReturnType<typeof createTokenization>;
