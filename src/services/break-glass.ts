import { randomBytes } from "node:crypto";
import { type LogDraft, logDraft } from "../domain/access-log";
import type { CallContext } from "../domain/context";
import { denied, invalid, notFound, precondition, VaultError } from "../domain/errors";
import type { Policy } from "../domain/policy";
import { policyCaller, requireSecondCaller } from "../domain/two-person";
import type { Queryable } from "../storage/db";
import type { BreakGlassGrant } from "../storage/postgres/break-glass-store";
import type { CommitQueue } from "./commit-queue";

/** An unapproved request lapses after this long; file a new one. */
export const REQUEST_TTL_SECONDS = 3600;
const MAX_TEXT = 512;
const GRANT_ID = /^bg_[A-Za-z0-9_-]{1,64}$/;

/** The SQL this module needs (storage/postgres/break-glass-store.ts); grants live in PostgreSQL, so every instance sees them. */
export interface BreakGlassStore {
  insert(tx: Queryable, g: Pick<BreakGlassGrant, "id" | "requesterCaller" | "requestedBy" | "categories" | "purpose" | "justification" | "durationSeconds" | "requestedAt">): Promise<void>;
  /** With `tx`, locks the row until that transaction ends. */
  find(id: string, tx?: Queryable): Promise<BreakGlassGrant | undefined>;
  approve(tx: Queryable, a: { id: string; approvedBy: string; approverCaller: string; approvedAt: Date; expiresAt: Date }): Promise<void>;
}

export interface BreakGlassDeps {
  policy: () => Policy;
  categories: () => readonly string[];
  commits: Pick<CommitQueue, "submit" | "append">;
  store: BreakGlassStore;
  /** FIELDVAULT_BREAK_GLASS_MAX_SECONDS: the longest grant that may be requested. */
  maxSeconds: number;
  instanceId: string;
  /** Told about every value revealed through a grant, after its log entry committed (WARN line, metric). */
  onReveal?: (e: { grantId: string; caller: string; identity: string; category: string; purpose: string; requestId: string }) => void;
  now?: () => Date;
}

/** An approved, unexpired grant of the calling caller for one purpose: what Detokenize consults. */
export interface OpenGrant {
  readonly id: string;
  covers(category: string): boolean;
}

function checkText(field: string, value: string, required: boolean): void {
  if (required && value.length === 0) throw invalid(`${field}: required`);
  if (value.length > MAX_TEXT) throw invalid(`${field}: longer than ${MAX_TEXT} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalid(`${field}: contains control characters`);
}

/**
 * Break-glass (DESIGN §15; PCI DSS 7.2 emergency access): a caller files a request for categories
 * and one purpose its standing grants do not allow; a different policy caller with
 * approve_break_glass approves; until the grant expires, the requester's Detokenize with the
 * grant id may reveal exactly those categories for that purpose. Every step is in the access log
 * with the grant id, refusals included.
 */
export function createBreakGlass(deps: BreakGlassDeps) {
  const now = deps.now ?? (() => new Date());
  const draft = (ctx: CallContext, action: string, fields: Partial<LogDraft> = {}): LogDraft =>
    logDraft(ctx, deps.instanceId, now(), action, fields);
  const outcomeOf = (err: VaultError) => (err.code === "PERMISSION_DENIED" ? "denied" : err.code.toLowerCase());
  /** Refusals already written to the log (in the transaction that found them). */
  const logged = new WeakSet<object>();

  /** Every refusal (not permitted, bad input, unknown or lapsed request) is logged with the grant id before it is thrown. */
  async function refusalsLogged<T>(ctx: CallContext, action: string, grantId: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      if (err instanceof VaultError && err.code !== "UNAVAILABLE" && err.code !== "INTERNAL" && !logged.has(err)) {
        const id = GRANT_ID.test(grantId) ? grantId : "(malformed)";
        await deps.commits.append([draft(ctx, action, { outcome: outcomeOf(err), detail: `break_glass_id=${id} ${err.message}` })]).catch(() => undefined);
      }
      throw err;
    }
  }

  async function request(
    ctx: CallContext,
    req: { categories: readonly string[]; purpose: string; justification: string; durationSeconds: number },
  ): Promise<{ requestId: string; status: "PENDING_APPROVAL" }> {
    const id = "bg_" + randomBytes(12).toString("base64url");
    return refusalsLogged(ctx, "break_glass_request", id, async () => {
      const policy = deps.policy();
      const caller = policyCaller(policy, ctx.identity);
      if (req.categories.length === 0) throw invalid("categories: must not be empty");
      const known = new Set(deps.categories());
      req.categories.forEach((c, i) => {
        if (!known.has(c)) throw invalid(`categories[${i}]: unknown category`);
      });
      const categories = [...new Set(req.categories)].sort();
      checkText("purpose", req.purpose, true);
      if (!policy.isPurpose(req.purpose)) throw invalid("purpose: undeclared purpose");
      checkText("justification", req.justification, true);
      if (!Number.isInteger(req.durationSeconds) || req.durationSeconds < 1) throw invalid("duration_seconds: required (1 or more)");
      if (req.durationSeconds > deps.maxSeconds) throw invalid(`duration_seconds: at most ${deps.maxSeconds} (FIELDVAULT_BREAK_GLASS_MAX_SECONDS)`);
      const rule = policy.breakGlassRule(ctx.identity);
      if (!rule) throw denied(`caller ${caller} may not request break-glass`);
      for (const c of categories) if (!rule.categories.includes(c)) throw denied(`caller ${caller} may not request break-glass for ${c}`);
      if (!rule.purposes.includes(req.purpose)) throw denied(`caller ${caller} may not request break-glass for purpose ${req.purpose}`);
      const at = now();
      await deps.commits.submit({
        work: (tx: Queryable) =>
          deps.store.insert(tx, {
            id,
            requesterCaller: caller,
            requestedBy: ctx.identity,
            categories,
            purpose: req.purpose,
            justification: req.justification,
            durationSeconds: req.durationSeconds,
            requestedAt: at,
          }),
        log: [
          draft(ctx, "break_glass_request", {
            category: categories.join(","),
            purpose: req.purpose,
            justification: req.justification,
            outcome: "pending_approval",
            detail: `break_glass_id=${id} duration_seconds=${req.durationSeconds}`,
          }),
        ],
      });
      return { requestId: id, status: "PENDING_APPROVAL" as const };
    });
  }

  async function approve(ctx: CallContext, req: { requestId: string }): Promise<{ requestId: string; status: "APPROVED"; expiresAt: Date }> {
    return refusalsLogged(ctx, "break_glass_approve", req.requestId, async () => {
      const policy = deps.policy();
      const approver = policyCaller(policy, ctx.identity);
      if (!GRANT_ID.test(req.requestId)) throw invalid("request_id: not a break-glass request id");
      // A refusal found inside the transaction is logged in that same commit (nothing else is written).
      type Outcome = { ok: true; grant: BreakGlassGrant; expiresAt: Date } | { ok: false; err: VaultError };
      const { result } = await deps.commits.submit<Outcome>({
        work: async (tx: Queryable) => {
          try {
            const g = await deps.store.find(req.requestId, tx);
            if (!g) throw notFound(`request_id: no break-glass request ${req.requestId}`);
            // Compared by policy caller: another certificate (or the header) of the requester is the requester.
            requireSecondCaller(g.requesterCaller, approver, `break-glass needs a second, different caller: policy caller ${approver} filed ${g.id}`);
            if (!policy.canApproveBreakGlass(ctx.identity, g.requesterCaller)) {
              throw denied(`caller ${approver} may not approve break-glass requests of ${g.requesterCaller}`);
            }
            if (g.approvedAt) throw precondition(`break-glass request ${g.id} was already approved by ${g.approverCaller}`);
            const at = now();
            if (at.getTime() - g.requestedAt.getTime() > REQUEST_TTL_SECONDS * 1000) {
              throw precondition(`break-glass request ${g.id} was not approved within ${REQUEST_TTL_SECONDS / 60} minutes; file a new one`);
            }
            const expiresAt = new Date(at.getTime() + g.durationSeconds * 1000);
            await deps.store.approve(tx, { id: g.id, approvedBy: ctx.identity, approverCaller: approver, approvedAt: at, expiresAt });
            return { ok: true, grant: g, expiresAt };
          } catch (err) {
            if (err instanceof VaultError && err.code !== "UNAVAILABLE" && err.code !== "INTERNAL") return { ok: false, err };
            throw err;
          }
        },
        log: (r) => [
          r && !r.ok
            ? draft(ctx, "break_glass_approve", { outcome: outcomeOf(r.err), detail: `break_glass_id=${req.requestId} ${r.err.message}` })
            : draft(ctx, "break_glass_approve", {
                category: r?.grant.categories.join(",") ?? "",
                purpose: r?.grant.purpose ?? "",
                outcome: "approved",
                detail: `break_glass_id=${req.requestId} requested_by=${r?.grant.requesterCaller ?? ""} expires_at=${r?.expiresAt.toISOString() ?? ""}`,
              }),
        ],
      });
      if (!result) throw new VaultError("INTERNAL", "approval produced no result");
      if (!result.ok) {
        logged.add(result.err);
        throw result.err;
      }
      return { requestId: req.requestId, status: "APPROVED" as const, expiresAt: result.expiresAt };
    });
  }

  /**
   * The grant a Detokenize names, checked for this caller and purpose; any mismatch refuses the
   * whole call (PERMISSION_DENIED, logged by the caller's guard with the grant id in the message).
   */
  async function open(ctx: CallContext, grantId: string, purpose: string): Promise<OpenGrant> {
    if (!GRANT_ID.test(grantId)) throw invalid("break_glass_id: not a break-glass grant id");
    const policy = deps.policy();
    const caller = policyCaller(policy, ctx.identity);
    const g = await deps.store.find(grantId);
    const refuse = (why: string) => denied(`break_glass_id=${grantId}: ${why}`);
    if (!g) throw refuse("no such grant");
    if (g.requesterCaller !== caller) throw refuse("the grant belongs to another caller");
    if (!g.approvedAt || !g.expiresAt) throw refuse("the grant has not been approved");
    if (g.expiresAt.getTime() <= now().getTime()) throw refuse(`the grant expired at ${g.expiresAt.toISOString()}`);
    if (g.purpose !== purpose) throw refuse(`the grant is for purpose ${g.purpose}`);
    // A grant never outlives the policy rule that allowed it (a reload can withdraw it).
    const rule = policy.breakGlassRule(ctx.identity);
    const categories = new Set(g.categories.filter((c) => rule?.categories.includes(c) && rule.purposes.includes(g.purpose)));
    return { id: g.id, covers: (category) => categories.has(category) };
  }

  /** A value left through a grant (its entry committed): WARN line and metric. */
  function revealed(ctx: CallContext, grant: OpenGrant, category: string, purpose: string): void {
    deps.onReveal?.({ grantId: grant.id, caller: deps.policy().callerName(ctx.identity) ?? "unknown", identity: ctx.identity, category, purpose, requestId: ctx.requestId });
  }

  return { request, approve, open, revealed };
}

export type BreakGlass = ReturnType<typeof createBreakGlass>;
