import { writeFile } from "node:fs/promises";
import type { ServiceError } from "@grpc/grpc-js";
import type { Command } from "commander";
import type { LogEntry, VerifyResponse } from "../gen/fieldvault/v1/access_log";
import { client, parseTime, queryPage } from "./audit";
import { addConnectOptions, type ConnectOptions } from "./connect";
import { renderReport } from "./report/html";
import { buildReport, type ReportEntry } from "./report/model";

/**
 * `fieldvault audit report --since … --until … [--by CALLER] --out report.html`: an incident report
 * built only from the AccessLog API (Query for the range, Verify for the same range), so it needs
 * `log_read` and is itself written to the access log like any other log read.
 */
export function registerReport(audit: Command): void {
  addConnectOptions(audit.command("report"))
    .description("write a self-contained HTML incident report (timeline of reveals, refusals, top callers, break-glass, key admin, Verify)")
    .requiredOption("--since <time>", "from this time, inclusive (ISO 8601, or an age such as 24h)", (v) => parseTime(v))
    .option("--until <time>", "before this time, exclusive (default: now)", (v) => parseTime(v))
    .option("--by <identity>", "only calls made by this caller identity")
    .requiredOption("--out <file>", "the HTML file to write (mode 0600)")
    .action(async (o: ConnectOptions & { since: Date; until?: Date; by?: string; out: string }) => {
      const until = o.until ?? new Date();
      if (until <= o.since) throw new Error("--until must be after --since");
      const { log, md } = client(o);
      const entries: ReportEntry[] = [];
      try {
        let cursor = "";
        do {
          const req = { caller: o.by ?? "", token: "", category: "", purpose: "", outcome: "", action: "", since: o.since, until, pageSize: 1000, pageToken: cursor };
          cursor = await queryPage(log, md, req, (e: LogEntry) => {
            entries.push({
              sequence: e.sequence,
              time: e.time ?? new Date(0),
              caller: e.caller,
              action: e.action,
              category: e.category,
              purpose: e.purpose,
              outcome: e.outcome,
              token: e.token,
              detail: e.detail,
            });
          });
        } while (cursor);
        const v = await new Promise<VerifyResponse>((resolve, reject) =>
          log.verify({ since: o.since, until }, md, (err: ServiceError | null, res: VerifyResponse) => (err ? reject(err) : resolve(res))),
        );
        const model = buildReport({
          entries,
          since: o.since,
          until,
          by: o.by,
          verify: {
            ok: v.ok,
            entriesChecked: v.entriesChecked,
            checkpointsChecked: v.checkpointsChecked,
            unsealedEntries: v.unsealedEntries ?? 0,
            firstBrokenSequence: v.firstBrokenSequence,
            problem: v.problem,
            detail: v.detail,
          },
        });
        await writeFile(o.out, renderReport(model), { mode: 0o600 });
        process.stderr.write(`report: ${model.entries} entries, ${model.reveals} reveals, Verify ${v.ok ? "ok" : "BROKEN"} → ${o.out}\n`);
      } finally {
        log.close();
      }
    });
}
