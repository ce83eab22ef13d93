import { randomBytes } from "node:crypto";
import type { SigningKey } from "../crypto/signing";
import { subjectRefHash } from "../crypto/subject-ref";
import { type LogDraft, logDraft } from "../domain/access-log";
import type { CallContext } from "../domain/context";
import { type Receipt, signReceipt } from "../domain/erasure-receipt";
import { denied, invalid, VaultError } from "../domain/errors";
import type { Policy } from "../domain/policy";
import { policyCaller } from "../domain/two-person";
import type { Queryable } from "../storage/db";
import type { HeldToken, SubjectToken, TokenLogEntry } from "../storage/postgres/subject-store";
import type { CommitQueue } from "./commit-queue";

export const DEFAULT_REPORT_PAGE = 500;
export const MAX_REPORT_PAGE = 5000;
const MAX_REF = 512;

/** The SQL this module needs (storage/postgres/subject-store.ts); reads go to the primary. */
export interface SubjectStore {
  eraseLinks(tx: Queryable, subjectRef: string, caller: string, categories: readonly string[]): Promise<{ erased: SubjectToken[]; unlinked: SubjectToken[] }>;
  findMarkedEntry(e: { caller: string; at: Date; requestId: string; action: string; marker: string }): Promise<{ seq: number; chainId: string; chainSeq: number } | undefined>;
  subjectTokens(subjectRef: string): Promise<HeldToken[]>;
  entriesAboutTokens(tokens: readonly string[], before: { at: Date; seq: number } | undefined, limit: number): Promise<TokenLogEntry[]>;
}

export interface SubjectRightsDeps {
  policy: () => Policy;
  categories: () => readonly string[];
  commits: Pick<CommitQueue, "submit" | "append">;
  store: SubjectStore;
  signingKey: SigningKey;
  /** Keys the subject-reference hash written to the log (crypto/subject-ref.ts). */
  subjectKey: Uint8Array;
  instanceId: string;
  now?: () => Date;
}

export interface ErasureOutcome {
  erased: number;
  unlinked: number;
  receipt: Receipt;
}

export interface SubjectReport {
  subjectRef: string;
  /** Every linked token, on the first page only. */
  tokens: HeldToken[];
  entries: TokenLogEntry[];
  nextPageToken: string;
}

function checkRef(value: string): void {
  if (value.length === 0) throw invalid("subject_ref: required");
  if (value.length > MAX_REF) throw invalid(`subject_ref: longer than ${MAX_REF} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalid("subject_ref: contains control characters");
}

const encodeCursor = (e: { at: Date; seq: number }) => Buffer.from(`s1:${e.at.getTime()}:${e.seq}`).toString("base64url");
function decodeCursor(token: string): { at: Date; seq: number } {
  const m = /^s1:(\d{1,15}):(\d{1,16})$/.exec(Buffer.from(token, "base64url").toString("utf8"));
  if (!m || !/^[A-Za-z0-9_-]+$/.test(token)) throw invalid("page_token: not a cursor returned by SubjectReport");
  return { at: new Date(Number(m[1])), seq: Number(m[2]) };
}

/**
 * Data-subject rights (DESIGN §14, Decree 13/2023 and GDPR Art. 15 and 17): erasure with a signed
 * receipt, and the subject report. The raw subject reference goes only to the caller (in the
 * receipt and the report); the access log records a keyed hash of it.
 */
export function createSubjectRights(deps: SubjectRightsDeps) {
  const now = deps.now ?? (() => new Date());
  const draft = (ctx: CallContext, action: string, at: Date, fields: Partial<LogDraft> = {}): LogDraft =>
    logDraft(ctx, deps.instanceId, at, action, fields);

  /** A refusal (not permitted, bad input) is logged before its error is thrown. */
  async function refusalsLogged<T>(ctx: CallContext, action: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      if (err instanceof VaultError && (err.code === "PERMISSION_DENIED" || err.code === "INVALID_ARGUMENT")) {
        const outcome = err.code === "PERMISSION_DENIED" ? "denied" : "invalid_argument";
        await deps.commits.append([draft(ctx, action, now(), { outcome, detail: err.message })]).catch(() => undefined);
      }
      throw err;
    }
  }

  /**
   * Unlinks the subject from the tokens this policy caller linked, for the categories it may
   * delete, erasing the values no one else still holds; the other callers' links stay. Returns a
   * receipt signed with the log's key that names the erasure's access-log entry.
   */
  async function deleteSubject(ctx: CallContext, req: { subjectRef: string }): Promise<ErasureOutcome> {
    return refusalsLogged(ctx, "delete_subject", async () => {
      const policy = deps.policy();
      const caller = policyCaller(policy, ctx.identity);
      checkRef(req.subjectRef);
      if (!policy.canDeleteSubject(ctx.identity)) throw denied("may not delete data subjects");
      const categories = deps.categories().filter((c) => policy.canDelete(ctx.identity, c)).sort();
      const at = now();
      const receiptId = "er_" + randomBytes(12).toString("base64url");
      const subject = subjectRefHash(deps.subjectKey, req.subjectRef);
      const { result } = await deps.commits.submit({
        work: (tx: Queryable) => deps.store.eraseLinks(tx, req.subjectRef, caller, categories),
        log: (r) => [
          ...(r?.erased ?? []).map((t) => draft(ctx, "delete_subject", at, { token: t.token, category: t.category, outcome: "erased", detail: `subject=${subject}` })),
          ...(r?.unlinked ?? []).map((t) => draft(ctx, "delete_subject", at, { token: t.token, category: t.category, outcome: "unlinked", detail: `subject=${subject}` })),
          draft(ctx, "delete_subject", at, {
            category: [...new Set([...(r?.erased ?? []), ...(r?.unlinked ?? [])].map((t) => t.category))].sort().join(","),
            detail: `receipt=${receiptId} subject=${subject} erased=${r?.erased.length ?? 0} unlinked=${r?.unlinked.length ?? 0} scope=${categories.join(",")}`,
          }),
        ],
      });
      const erased = result?.erased ?? [];
      const unlinked = result?.unlinked ?? [];
      // The entry committed with the erasure; its position is read back to bind the receipt to it.
      const entry = await deps.store.findMarkedEntry({ caller: ctx.identity, at, requestId: ctx.requestId, action: "delete_subject", marker: `receipt=${receiptId} ` });
      if (!entry) throw new VaultError("INTERNAL", "erasure committed but its access-log entry was not found");
      const receipt = signReceipt(deps.signingKey, {
        receipt_id: receiptId,
        subject_ref: req.subjectRef,
        time: at.toISOString(),
        erased_by: caller,
        categories,
        erased_tokens: erased.map((t) => t.token),
        unlinked_tokens: unlinked.map((t) => t.token),
        access_log: { sequence: entry.seq, chain_id: entry.chainId, chain_seq: entry.chainSeq, request_id: ctx.requestId },
      });
      return { erased: erased.length, unlinked: unlinked.length, receipt };
    });
  }

  /** What the vault holds about a subject and every access-log entry about it, newest first, paged. */
  async function report(ctx: CallContext, req: { subjectRef: string; pageSize: number; pageToken: string }): Promise<SubjectReport> {
    return refusalsLogged(ctx, "subject_report", async () => {
      const policy = deps.policy();
      policyCaller(policy, ctx.identity);
      if (!policy.canSubjectReport(ctx.identity)) throw denied(`caller ${ctx.identity} may not read subject reports`);
      checkRef(req.subjectRef);
      if (req.pageSize > MAX_REPORT_PAGE) throw invalid(`page_size: at most ${MAX_REPORT_PAGE}`);
      const pageSize = req.pageSize || DEFAULT_REPORT_PAGE;
      const before = req.pageToken ? decodeCursor(req.pageToken) : undefined;
      // Reading the report is itself logged, durably, before anything is returned.
      const subject = subjectRefHash(deps.subjectKey, req.subjectRef);
      await deps.commits.append([draft(ctx, "subject_report", now(), { detail: `subject=${subject} page_size=${pageSize}${before ? " continued" : ""}` })]);
      const tokens = await deps.store.subjectTokens(req.subjectRef);
      const rows = await deps.store.entriesAboutTokens(tokens.map((t) => t.token), before, pageSize + 1);
      const entries = rows.slice(0, pageSize);
      const more = rows.length > pageSize;
      return { subjectRef: req.subjectRef, tokens: before ? [] : tokens, entries, nextPageToken: more ? encodeCursor(entries[entries.length - 1]!) : "" };
    });
  }

  return { deleteSubject, report };
}

export type SubjectRights = ReturnType<typeof createSubjectRights>;
