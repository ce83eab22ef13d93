import { type Metadata, status } from "@grpc/grpc-js";
import { type TokenizeRequest, type TokenizeResponse, TokenFormat } from "../../gen/fieldvault/v1/token_service";
import { TOKENIZE_BUDGET_EXCEEDED } from "../../domain/errors";
import { errorDetailsOf } from "../../sdk/error-details";
import type { RowItem } from "./items";

/** One Tokenize call (the CLI binds it to a gRPC client; the benchmark calls the same one). */
export type TokenizeCall = (req: TokenizeRequest) => Promise<TokenizeResponse>;

export interface Retry {
  /** Attempts for a call that fails as a whole with a transient code, the first included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  /**
   * Budget windows one call may wait through when the vault refuses it for the caller's tokenize
   * budget (default 10). The budget is per minute, so each wait lasts until the next minute.
   */
  budgetWaits?: number;
  /** How long to wait for the next budget window (default: the vault's RetryInfo, plus up to 1 s). */
  budgetDelayMs?: (retryAfterMs: number) => number;
  /** Told each time a call waits for the tokenize budget (the CLI says so once on stderr). */
  onBudget?: (e: { category: string; limit: number; delayMs: number }) => void;
}

export const DEFAULT_RETRY: Retry = { attempts: 8, baseDelayMs: 200, maxDelayMs: 5000 };

const DEFAULT_BUDGET_WAITS = 10;
/** After the window the vault named, spread over a second so parallel importers do not all return at once. */
const afterWindow = (retryAfterMs: number) => retryAfterMs + Math.random() * 1000;

/**
 * The vault's refusal for a caller's deterministic tokenize budget (services/tokenize-budget.ts),
 * read from its google.rpc.ErrorInfo (reason TOKENIZE_BUDGET_EXCEEDED, the category and the limit)
 * and RetryInfo (when the budget's window ends). Not an outage: the policy paces this caller.
 */
export function budgetRefusal(err: unknown): { category: string; limit: number; retryAfterMs: number } | undefined {
  const e = err as { code?: number; metadata?: Metadata };
  if (e?.code !== status.RESOURCE_EXHAUSTED) return undefined;
  const d = errorDetailsOf(e.metadata);
  if (d?.reason !== TOKENIZE_BUDGET_EXCEEDED || !d.info.category) return undefined;
  const limit = Number(d.info.limit_per_minute);
  return { category: d.info.category, limit: Number.isFinite(limit) ? limit : Infinity, retryAfterMs: Math.max(0, d.retryAfterMs ?? 60_000) };
}

/** Codes for which the same call is tried again: the vault or its database was unreachable. */
const TRANSIENT = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED, status.DEADLINE_EXCEEDED]);

/** The import cannot go on (the vault refused the caller or the mapping, or stayed unreachable). */
export class ImportStopped extends Error {
  constructor(
    message: string,
    /** True when running again with --resume may succeed (the vault was unreachable). */
    readonly resumable: boolean,
  ) {
    super(message);
  }
}

export interface Rejected {
  row: RowItem;
  column: string;
  reason: string;
}

export interface BatchResult {
  /** Tokens per row, for the rows that were tokenized. */
  tokens: Map<RowItem, string[]>;
  rejected: Rejected[];
  /** Tokenize calls made (including refused ones and retries). */
  calls: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const grpcError = (err: unknown) => err as { code?: number; details?: string; message?: string };

/** "fields[12] (card_number): fails the Luhn check" → { index: 12, rest: "fails the Luhn check" }. */
export function fieldOfError(details: string): { index: number; rest: string } | undefined {
  const m = /^fields\[(\d+)\](.*)$/s.exec(details);
  if (!m) return undefined;
  const tail = m[2]!;
  const colon = tail.indexOf(": ");
  return { index: Number(m[1]), rest: colon >= 0 ? tail.slice(colon + 2) : tail.replace(/^[.:\s]+/, "") };
}

/**
 * Tokenizes a group of rows (one data subject) in one call when it can. Tokenize is
 * all-or-nothing and names the first bad field, so on INVALID_ARGUMENT the row that owns that
 * field is set aside as a reject and the rest is sent again: the rejected call stored nothing, so
 * no row is ever tokenized twice, and a batch with k bad rows costs k + 1 calls. A call that fails
 * as a whole for a transient reason (UNAVAILABLE …) is retried with exponential back-off and full
 * jitter; past the budget the import stops (resumably).
 */
export async function tokenizeRows(
  call: TokenizeCall,
  rows: readonly RowItem[],
  subject: { ref: string; column: string },
  retry: Retry = DEFAULT_RETRY,
): Promise<BatchResult> {
  const result: BatchResult = { tokens: new Map(), rejected: [], calls: 0 };
  let live = rows.filter((r) => {
    if (r.fields.length) return true;
    result.tokens.set(r, []);
    return false;
  });
  while (live.length) {
    const owner: { row: RowItem; k: number }[] = [];
    const fields = live.flatMap((row) =>
      row.fields.map((f, k) => {
        owner.push({ row, k });
        return { category: f.category, value: f.value, tokenFormat: f.preserving ? TokenFormat.TOKEN_FORMAT_PRESERVING : undefined };
      }),
    );
    let res: TokenizeResponse;
    try {
      res = await withBudget(
        () =>
          withRetry(() => {
            result.calls++;
            return call({ fields, ttlSeconds: 0, subjectRef: subject.ref });
          }, retry),
        fields,
        retry,
      );
    } catch (err) {
      if (err instanceof ImportStopped) throw err;
      const e = grpcError(err);
      const details = e.details ?? e.message ?? "";
      if (e.code !== status.INVALID_ARGUMENT) {
        if (e.code !== undefined && TRANSIENT.has(e.code)) throw new ImportStopped(`the vault stayed unavailable after ${retry.attempts} attempts (${details})`, true);
        throw new ImportStopped(`the vault refused the import: ${details}`, e.code === status.INTERNAL);
      }
      const bad = fieldOfError(details);
      if (bad && bad.index < owner.length) {
        const { row, k } = owner[bad.index]!;
        const field = row.fields[k]!;
        if (/^\.(category|token_format)\b/.test(details.slice(details.indexOf("]") + 1))) {
          throw new ImportStopped(`--map ${field.column}=${field.category}: the vault refused it: ${bad.rest}`, false);
        }
        result.rejected.push({ row, column: field.column, reason: `${field.category}: ${bad.rest}` });
        live = live.filter((r) => r !== row);
        continue;
      }
      if (details.startsWith("subject_ref")) {
        for (const row of live) result.rejected.push({ row, column: subject.column, reason: details });
        return result;
      }
      if (/^fields: /.test(details)) throw new ImportStopped(`the vault refused a batch of ${fields.length} fields (${details}); use a smaller --batch`, false);
      throw new ImportStopped(`the vault refused a batch: ${details}`, false);
    }
    if (res.tokens.length !== fields.length) throw new ImportStopped(`the vault answered ${res.tokens.length} tokens for ${fields.length} fields`, false);
    for (const row of live) result.tokens.set(row, []);
    res.tokens.forEach((t, i) => (result.tokens.get(owner[i]!.row)![owner[i]!.k] = t.token));
    return result;
  }
  return result;
}

/**
 * Sends a call again after the next budget window while the vault refuses it for the caller's
 * tokenize budget. A call with more fields of the category than the whole budget can never pass:
 * it stops the import at once, saying what to change. Past `budgetWaits` windows it stops resumably.
 */
async function withBudget<T>(send: () => Promise<T>, fields: readonly { category: string }[], retry: Retry): Promise<T> {
  const waits = retry.budgetWaits ?? DEFAULT_BUDGET_WAITS;
  for (let n = 0; ; n++) {
    try {
      return await send();
    } catch (err) {
      const refusal = budgetRefusal(err);
      if (!refusal) throw err;
      const { category, limit, retryAfterMs } = refusal;
      const wanted = fields.filter((f) => f.category === category).length;
      const advice = `raise tokenize_deterministic_per_minute for this caller in the vault's policy`;
      if (wanted > limit) {
        throw new ImportStopped(`a batch holds ${wanted} ${category} fields but the caller's tokenize budget is ${limit} a minute: use a --batch of fewer rows, or ${advice}`, false);
      }
      if (n >= waits) {
        throw new ImportStopped(`the caller's tokenize budget for ${category} (${limit} a minute) refused a batch through ${waits} windows; ${advice}`, true);
      }
      const delayMs = (retry.budgetDelayMs ?? afterWindow)(retryAfterMs);
      retry.onBudget?.({ category, limit, delayMs });
      await sleep(delayMs);
    }
  }
}

async function withRetry<T>(attempt: () => Promise<T>, retry: Retry): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      const code = grpcError(err).code;
      // The tokenize budget is paced by withBudget, not retried on the back-off schedule.
      if (code === undefined || !TRANSIENT.has(code) || n >= retry.attempts || budgetRefusal(err)) throw err;
      await sleep(Math.random() * Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (n - 1)));
    }
  }
}
