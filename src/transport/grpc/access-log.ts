import type { AccessLogServer, LogEntry } from "../../gen/fieldvault/v1/access_log";
import type { Audit } from "../../services/audit";
import type { SubjectRights } from "../../services/subject-rights";
import { type CallHooks, serverStream, unary } from "./call";

/** AccessLog: decode → call the audit service → encode. Authorization and logging happen in the service. */
export function accessLogHandlers(hooks: CallHooks, svc: Audit, subjects: Pick<SubjectRights, "report">): AccessLogServer {
  return {
    query: serverStream(hooks, "Query", async (ctx, req, write, cancelled, trailer) => {
      const page = await svc.query(ctx, {
        caller: req.caller,
        token: req.token,
        category: req.category,
        purpose: req.purpose,
        outcome: req.outcome,
        action: req.action,
        since: req.since,
        until: req.until,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
      });
      // Served by the read replica: say how far behind it was (entries newer than that may be missing).
      if (page.source.replica) trailer("x-fieldvault-replica-lag-seconds", page.source.lagSeconds.toFixed(3));
      for (const { entry: e, nextPageToken } of page.entries) {
        if (cancelled()) return;
        const msg: LogEntry = {
          sequence: e.seq,
          time: e.at,
          caller: e.caller,
          auth: e.auth,
          peer: e.peer,
          action: e.action,
          category: e.category,
          token: e.token,
          purpose: e.purpose,
          justification: e.justification,
          outcome: e.outcome,
          requestId: e.requestId,
          instanceId: e.instanceId,
          chainId: e.chainId,
          chainSeq: e.chainSeq,
          detail: e.detail,
          nextPageToken,
        };
        await write(msg);
      }
    }),
    verify: unary(hooks, "Verify", (ctx, req) => svc.verify(ctx, { since: req.since, until: req.until, anchor: req.anchor })),
    subjectReport: unary(hooks, "SubjectReport", async (ctx, req) => {
      const r = await subjects.report(ctx, { subjectRef: req.subjectRef, pageSize: req.pageSize, pageToken: req.pageToken });
      return {
        subjectRef: r.subjectRef,
        tokens: r.tokens.map((t) => ({ token: t.token, category: t.category, masked: t.masked.display, createdAt: t.createdAt, expiresAt: t.expiresAt ?? undefined })),
        entries: r.entries.map((e) => ({
          sequence: e.seq,
          time: e.at,
          caller: e.caller,
          action: e.action,
          token: e.token,
          category: e.category,
          purpose: e.purpose,
          outcome: e.outcome,
        })),
        nextPageToken: r.nextPageToken,
        servedByReplica: false,
        replicaLagSeconds: 0,
      };
    }),
  };
}
