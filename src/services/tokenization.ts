import { type Kek, openValue, sealValue } from "../crypto/envelope";
import { fingerprint } from "../crypto/fingerprint";
import { isWellFormedToken, newToken } from "../crypto/tokens";
import { type LogDraft, logDraft } from "../domain/access-log";
import type { CategoryRegistry, MaskedView } from "../domain/categories";
import type { CallContext } from "../domain/context";
import { DependencyError, denied, invalid, VaultError } from "../domain/errors";
import type { Policy } from "../domain/policy";
import type { Queryable } from "../storage/db";
import type { CvvRecord, CvvStore, NewToken, RateLimiter, TokenRecord } from "../storage/ports";
import { deleteSubject, deleteTokens } from "../storage/postgres/token-store";
import type { CommitQueue } from "./commit-queue";
import type { Keyring } from "./keyring";
import { batchLookups } from "./lookup-batcher";

export const CVV_MAX_TTL_SECONDS = 3600;
const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;
const MAX_TEXT = 512;

export interface TokenizationDeps {
  registry: CategoryRegistry;
  policy: () => Policy;
  keyring: Pick<Keyring, "active" | "forDecrypt" | "fingerprintKey">;
  commits: Pick<CommitQueue, "submit" | "append">;
  findTokens: (ids: readonly string[]) => Promise<Map<string, TokenRecord>>;
  cvv: CvvStore;
  rateLimiter: RateLimiter;
  instanceId: string;
  maxBatch: number;
  cvvTtlSeconds: number;
  now?: () => Date;
  /** Told about each detokenize item once its log entry committed (metrics); never given a value. */
  onDetokenized?: (e: { identity: string; category: string; purpose: string; outcome: string }) => void;
}

export interface TokenizedField {
  token: string;
  category: string;
  masked: MaskedView;
  expiresAt: Date | null;
}

export type ItemResult<T> = ({ ok: true } & T) | { ok: false; code: string; message: string };
export type DetokenizeItem = { token: string; category: string } & ({ ok: true; value: string } | { ok: false; code: string; message: string });
export type InspectItem = ItemResult<{ token: string; category: string; masked: MaskedView; createdAt: Date; expiresAt: Date | null; keyVersion: number }> & { token: string };

/** A stored envelope from either store, with what the policy and the log need to know. */
interface Found {
  category: string;
  kekVersion: number;
  wrappedDek: Uint8Array;
  ciphertext: Uint8Array;
  masked?: MaskedView;
  createdAt: Date;
  expiresAt: Date | null;
  inRedis: boolean;
}

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
      if (err instanceof VaultError && (err.code === "PERMISSION_DENIED" || err.code === "INVALID_ARGUMENT")) {
        const outcome = err.code === "PERMISSION_DENIED" ? "denied" : "invalid_argument";
        await deps.commits.append([draft(ctx, action, { outcome, detail: err.message })]).catch(() => undefined);
      }
      throw err;
    }
  }

  async function tokenize(
    ctx: CallContext,
    req: { fields: readonly { category: string; value: string }[]; ttlSeconds: number; subjectRef: string },
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
        return spec;
      });
      const normalised = req.fields.map((f, i) => {
        const n = specs[i]!.normalise(f.value, at);
        if (!n.ok) throw invalid(`fields[${i}] (${specs[i]!.name}): ${n.reason}`);
        return n.value;
      });

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
        const sealed = sealValue(kek, id, spec.name, plain);
        plain.fill(0);
        const masked = spec.mask(value, at);
        if (spec.storage === "redis") {
          const ttl = Math.min(req.ttlSeconds || deps.cvvTtlSeconds, CVV_MAX_TTL_SECONDS);
          const expiresAt = new Date(at.getTime() + ttl * 1000);
          cvvs.push({ token: id, record: { ...sealed, createdAt: at, expiresAt } });
          out.push({ token: id, category: spec.name, masked, expiresAt });
          return;
        }
        const expiresAt = req.ttlSeconds ? new Date(at.getTime() + req.ttlSeconds * 1000) : null;
        rowOf.push(out.length);
        rows.push({
          id,
          category: spec.name,
          ...sealed,
          fingerprint: spec.tokenKind === "deterministic" ? fingerprint(deps.keyring.fingerprintKey(spec.name), utf8.encode(value)) : null,
          masked,
          createdAt: at,
          expiresAt,
          subjectRef: req.subjectRef || null,
        });
        out.push({ token: id, category: spec.name, masked, expiresAt });
      });

      // CVVs first: if the database commit then fails, they are removed again (and expire anyway).
      if (cvvs.length) await deps.cvv.put(cvvs);
      const categories = [...new Set(specs.map((s) => s.name))].join(",");
      try {
        const { tokenIds } = await deps.commits.submit({
          tokens: rows,
          log: [draft(ctx, "tokenize", { category: categories, detail: `fields=${req.fields.length}` })],
        });
        // Deterministic tokens resolve to the id already holding the value.
        rowOf.forEach((outIndex, r) => (out[outIndex]!.token = tokenIds[r]!));
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
    for (const [id, r] of await findTokens(wellFormed)) found.set(id, { ...r, inRedis: false });
    const rest = wellFormed.filter((t) => !found.has(t));
    if (rest.length) {
      try {
        for (const [id, r] of await deps.cvv.peek(rest)) {
          found.set(id, { ...r, category: "card_cvv", inRedis: true });
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
    req: { tokens: readonly string[]; purpose: string; justification: string },
  ): Promise<DetokenizeItem[]> {
    return guard(ctx, "detokenize", async () => {
      checkCount("tokens", req.tokens.length, deps.maxBatch);
      checkText("purpose", req.purpose, true);
      checkText("justification", req.justification, false);
      const policy = deps.policy();
      const at = now();
      const found = await lookup(req.tokens, true);

      // Decide each item: existence, policy, expiry; then rate budgets per category.
      type Pending = { i: number; f: Found };
      const results: DetokenizeItem[] = new Array(req.tokens.length);
      const outcomes: string[] = new Array(req.tokens.length).fill("allowed");
      const fail = (i: number, category: string, code: string, message: string, outcome = OUTCOMES[code] ?? "error") => {
        results[i] = { token: req.tokens[i]!, category, ok: false, code, message };
        outcomes[i] = outcome;
      };
      const allowedByCategory = new Map<string, Pending[]>();
      req.tokens.forEach((token, i) => {
        const f = found.get(token);
        if (!f && found.cacheDown && isWellFormedToken(token)) return fail(i, "", "UNAVAILABLE", "token store unavailable", "unavailable");
        if (!f) return fail(i, "", "NOT_FOUND", "unknown or erased token");
        if (!policy.isPurpose(req.purpose) || !policy.canDetokenize(ctx.identity, f.category, req.purpose)) {
          return fail(i, f.category, "PERMISSION_DENIED", `purpose ${policy.isPurpose(req.purpose) ? req.purpose : "(undeclared)"} does not allow ${f.category} for this caller`);
        }
        if (f.expiresAt && f.expiresAt <= at) return fail(i, f.category, "FAILED_PRECONDITION", "token has expired", "expired");
        const list = allowedByCategory.get(f.category) ?? [];
        list.push({ i, f });
        allowedByCategory.set(f.category, list);
      });
      const limit = policy.detokenizePerMinute(ctx.identity);
      for (const [category, items] of allowedByCategory) {
        const granted = await deps.rateLimiter.take(`${ctx.identity}:${category}`, limit, items.length);
        for (const { i } of items.slice(granted)) fail(i, category, "RESOURCE_EXHAUSTED", "rate budget exceeded");
        for (const { i, f } of items.slice(0, granted)) {
          const token = req.tokens[i]!;
          try {
            let env: Found | undefined = f;
            if (f.inRedis) {
              const taken = await deps.cvv.take(token);
              env = taken && { ...taken, category, inRedis: true };
            }
            if (!env) {
              fail(i, category, "NOT_FOUND", "unknown or erased token");
              continue;
            }
            const kek = deps.keyring.forDecrypt(category, env.kekVersion);
            const plain = openValue(kek, token, category, env);
            results[i] = { token, category, ok: true, value: utf8d.decode(plain) };
            plain.fill(0);
          } catch (err) {
            if (err instanceof VaultError && err.code === "FAILED_PRECONDITION") fail(i, category, err.code, err.message);
            else if (err instanceof VaultError && err.code === "UNAVAILABLE") throw err;
            else fail(i, category, "INTERNAL", "value could not be decrypted");
          }
        }
      }

      // Durable before reveal: values leave only after these entries are committed.
      await deps.commits.append(
        results.map((r, i) =>
          draft(ctx, "detokenize", {
            category: r.category,
            token: isWellFormedToken(r.token) ? r.token : "(malformed)",
            purpose: req.purpose,
            justification: req.justification,
            outcome: outcomes[i]!,
            detail: r.ok ? "" : r.message,
          }),
        ),
      );
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
        if (!policy.canInspect(ctx.identity, f.category)) {
          return { token, ok: false, code: "PERMISSION_DENIED", message: `may not inspect ${f.category}` };
        }
        const spec = deps.registry.get(f.category);
        let masked = f.masked ?? spec?.mask("", at) ?? { display: "", brand: "", last: "", expired: false };
        if (spec?.dynamicMask) {
          try {
            const plain = openValue(deps.keyring.forDecrypt(f.category, f.kekVersion), token, f.category, f);
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
        if (!policy.canDelete(ctx.identity, f.category)) throw denied(`tokens: may not delete ${f.category} (${token})`);
      }
      const redisTokens = [...found].filter(([, f]) => f.inRedis).map(([t]) => t);
      const pgTokens = [...found].filter(([, f]) => !f.inRedis).map(([t]) => t);
      const removedCvvs = redisTokens.length ? await deps.cvv.remove(redisTokens) : 0;
      const { result } = await deps.commits.submit({
        work: (tx: Queryable) => deleteTokens(tx, pgTokens),
        log: (ids) => [
          ...(ids ?? []).map((token) => draft(ctx, "delete", { token, category: found.get(token)!.category, outcome: "erased" })),
          ...redisTokens.map((token) => draft(ctx, "delete", { token, category: "card_cvv", outcome: "erased" })),
          draft(ctx, "delete", { detail: `requested=${req.tokens.length} erased=${(ids?.length ?? 0) + removedCvvs}` }),
        ],
      });
      return (result?.length ?? 0) + removedCvvs;
    });
  }

  async function eraseSubject(ctx: CallContext, req: { subjectRef: string }): Promise<{ erased: number; unlinked: number }> {
    return guard(ctx, "delete_subject", async () => {
      checkText("subject_ref", req.subjectRef, true);
      if (!deps.policy().canDeleteSubject(ctx.identity)) throw denied("may not delete data subjects");
      const { result } = await deps.commits.submit({
        work: (tx: Queryable) => deleteSubject(tx, req.subjectRef),
        log: (r) => [
          ...(r?.erased ?? []).map((token) => draft(ctx, "delete_subject", { token, outcome: "erased" })),
          draft(ctx, "delete_subject", { detail: `erased=${r?.erased.length ?? 0} unlinked=${r?.unlinked.length ?? 0}` }),
        ],
      });
      return { erased: result?.erased.length ?? 0, unlinked: result?.unlinked.length ?? 0 };
    });
  }

  return { tokenize, detokenize, inspect, erase, eraseSubject };
}

const OUTCOMES: Record<string, string> = {
  NOT_FOUND: "not_found",
  PERMISSION_DENIED: "denied",
  FAILED_PRECONDITION: "key_unavailable",
  RESOURCE_EXHAUSTED: "rate_limited",
  INTERNAL: "error",
};

export type Tokenization = ReturnType<typeof createTokenization>;
