import { createWriteStream, readFileSync } from "node:fs";
import type { Writable } from "node:stream";
import type { Metadata, ServiceError } from "@grpc/grpc-js";
import { type Command, Option } from "commander";
import { AccessLogClient, type LogEntry, type QueryRequest, type VerifyResponse } from "../gen/fieldvault/v1/access_log";
import { loadSigningKey } from "../config/signing-key";
import { parseCheckpointJson, publishedForkProblem } from "../domain/checkpoint";
import { readySodium } from "../crypto/sodium";
import { addConnectOptions, type ConnectOptions, credentials, metadata } from "./connect";
import { jsonLine, terminalSafe } from "./terminal-safe";

/** `fieldvault audit query | verify | export`: the incident responder's view of the access log. */

interface FilterOptions {
  /** The caller filter (`--by`): `--caller` is the connection's own development identity. */
  by?: string;
  token?: string;
  category?: string;
  purpose?: string;
  outcome?: string;
  action?: string;
  since?: Date;
  until?: Date;
}

const out = (line = "") => process.stdout.write(line + "\n");

/** ISO 8601 ("2025-03-01T10:00:00Z", "2025-03-01") or an age before now ("90m", "24h", "7d"). */
export function parseTime(value: string, now = new Date()): Date {
  const rel = /^(\d+)([smhd])$/.exec(value.trim());
  if (rel) {
    const unit = { s: 1, m: 60, h: 3600, d: 86400 }[rel[2] as "s" | "m" | "h" | "d"];
    return new Date(now.getTime() - Number(rel[1]) * unit * 1000);
  }
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) throw new Error(`not a time: ${value} (use ISO 8601, or an age such as 24h or 7d)`);
  return d;
}

function addFilters(cmd: Command): Command {
  return cmd
    .option("--by <identity>", "only calls made by this caller identity (exact, e.g. spiffe://ego/support-desk)")
    .option("--token <token>", "only entries about this token")
    .option("--category <category>", "only this data category")
    .option("--purpose <purpose>", "only this declared purpose")
    .option("--outcome <outcome>", "allowed | denied | not_found | expired | rate_limited | ok | …")
    .option("--action <action>", "detokenize | tokenize | inspect | delete | log_query | log_verify | …")
    .option("--since <time>", "from this time, inclusive (ISO 8601, or an age such as 24h)", (v) => parseTime(v))
    .option("--until <time>", "before this time, exclusive (ISO 8601, or an age)", (v) => parseTime(v));
}

function request(f: FilterOptions, pageSize: number, pageToken: string): QueryRequest {
  return {
    caller: f.by ?? "",
    token: f.token ?? "",
    category: f.category ?? "",
    purpose: f.purpose ?? "",
    outcome: f.outcome ?? "",
    action: f.action ?? "",
    since: f.since,
    until: f.until,
    pageSize,
    pageToken,
  };
}

export function client(o: ConnectOptions): { log: AccessLogClient; md: Metadata } {
  return { log: new AccessLogClient(o.address, credentials(o)), md: metadata(o) };
}

/** One page of Query, streamed into `onEntry`; resolves with the cursor of the next page ("" when done). */
export function queryPage(log: AccessLogClient, md: Metadata, req: QueryRequest, onEntry: (e: LogEntry) => void | Promise<void>): Promise<string> {
  return new Promise((resolve, reject) => {
    let next = "";
    let pending = Promise.resolve();
    const stream = log.query(req, md);
    stream.on("data", (e: LogEntry) => {
      next = e.nextPageToken;
      pending = pending.then(() => onEntry(e));
    });
    stream.on("error", reject);
    stream.on("end", () => pending.then(() => resolve(next), reject));
  });
}

const iso = (d: Date | undefined) => (d ? d.toISOString() : "");

/** The stable, flat form used by --json and export. */
export function entryRecord(e: LogEntry) {
  return {
    sequence: e.sequence,
    time: iso(e.time),
    caller: e.caller,
    auth: e.auth,
    peer: e.peer,
    action: e.action,
    category: e.category,
    token: e.token,
    purpose: e.purpose,
    justification: e.justification,
    outcome: e.outcome,
    request_id: e.requestId,
    instance_id: e.instanceId,
    chain_id: e.chainId,
    chain_seq: e.chainSeq,
    detail: e.detail,
  };
}

const CSV_COLUMNS = Object.keys(entryRecord({} as LogEntry)) as (keyof ReturnType<typeof entryRecord>)[];

/** RFC 4180 quoting; a leading =, +, - or @ is prefixed with ' so spreadsheets do not run it as a formula. */
function csvCell(v: unknown): string {
  let s = String(v ?? "");
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n']/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
}

function printTable(entries: LogEntry[]): void {
  const rows = [["SEQ", "TIME", "CALLER", "AUTH", "ACTION", "CATEGORY", "TOKEN", "PURPOSE", "OUTCOME", "DETAIL"]];
  for (const e of entries) {
    rows.push([
      String(e.sequence),
      iso(e.time).replace("T", " ").replace(/\.\d+Z$/, "Z"),
      e.caller,
      e.auth,
      e.action,
      e.category || "-",
      e.token || "-",
      e.purpose || "-",
      e.outcome,
      (e.detail || "").replace(/\s+/g, " ").slice(0, 60),
    ]);
  }
  for (const line of table(rows.map((r) => r.map(terminalSafe)))) out(line);
}

function write(stream: Writable, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.write(text)) resolve();
    else stream.once("drain", resolve).once("error", reject);
  });
}

/**
 * The newest checkpoint of an anchor file (its last line), after checking the file's checkpoints
 * against each other offline: a fork (two different checkpoints with one number) is reported here.
 */
export function newestAnchor(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new Error(`--anchor: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? "error"})`);
  }
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  const last = lines[lines.length - 1];
  if (!last) throw new Error(`--anchor: ${file} holds no checkpoint`);
  const cps = lines.map((l, i) => {
    const cp = parseCheckpointJson(l);
    if (typeof cp === "string") throw new Error(`--anchor: ${file} line ${i + 1} is not a published checkpoint (${cp})`);
    return cp;
  });
  const fork = publishedForkProblem(cps);
  if (fork) {
    out(`BROKEN: the anchor file's checkpoints disagree: ${fork}`);
    process.exit(2);
  }
  return last;
}

function printVerify(r: VerifyResponse): void {
  if (r.ok) {
    out(`OK: ${r.entriesChecked} entries and ${r.checkpointsChecked} signed checkpoints verified`);
    if (r.unsealedEntries) out(`  ${r.unsealedEntries} recent entries are not sealed by a checkpoint yet (within the grace window)`);
  } else {
    out(`BROKEN at sequence ${r.firstBrokenSequence}: ${terminalSafe(r.problem)}`);
    out(`  ${terminalSafe(r.detail)}`);
    out(`  (checked ${r.entriesChecked} entries and ${r.checkpointsChecked} checkpoints before stopping)`);
  }
}

export function registerAudit(program: Command): void {
  const audit = program.command("audit").description("query, verify and export the access log (needs the log_read permission)");

  addFilters(addConnectOptions(audit.command("query")))
    .description("list matching entries, newest first, one page at a time")
    .option("--limit <n>", "entries per page (max 1000)", (v) => Number(v), 50)
    .option("--page-token <cursor>", "continue after a previous page")
    .option("--all", "follow every page")
    .option("--json", "one JSON object per line instead of a table")
    .action(async (o: ConnectOptions & FilterOptions & { limit: number; pageToken?: string; all?: boolean; json?: boolean }) => {
      if (!Number.isInteger(o.limit) || o.limit < 1 || o.limit > 1000) throw new Error("--limit must be 1..1000");
      const { log, md } = client(o);
      try {
        let token = o.pageToken ?? "";
        const shown: LogEntry[] = [];
        do {
          token = await queryPage(log, md, request(o, o.limit, token), (e) => {
            if (o.json) out(jsonLine(entryRecord(e)));
            else shown.push(e);
          });
        } while (o.all && token);
        if (!o.json) {
          if (shown.length) printTable(shown);
          else out("no matching entries");
        }
        if (token) process.stderr.write(`more entries: add --page-token ${token} (or --all)\n`);
      } finally {
        log.close();
      }
    });

  addConnectOptions(audit.command("verify"))
    .description("recompute the hash chains and checkpoint signatures; exit 0 when intact, 2 when broken")
    .option("--since <time>", "only entries from this time (ISO 8601 or an age such as 24h)", (v) => parseTime(v))
    .option("--until <time>", "only entries before this time", (v) => parseTime(v))
    .option("--anchor <file>", "a file of checkpoints published outside the database (FIELDVAULT_AUDIT_ANCHOR_FILE): the database must still hold its newest one, and everything it covers")
    .option("--json", "print the raw result as JSON")
    .action(async (o: ConnectOptions & { since?: Date; until?: Date; anchor?: string; json?: boolean }) => {
      await readySodium();
      const anchor = o.anchor ? newestAnchor(o.anchor) : undefined;
      const { log, md } = client(o);
      try {
        const r = await new Promise<VerifyResponse>((resolve, reject) =>
          log.verify({ since: o.since, until: o.until, anchor }, md, (err: ServiceError | null, res: VerifyResponse) => (err ? reject(err) : resolve(res))),
        );
        if (o.json) out(JSON.stringify(r));
        else printVerify(r);
        if (!r.ok) process.exitCode = 2;
      } finally {
        log.close();
      }
    });

  audit
    .command("public-key")
    .description("print the public half of a checkpoint signing key (for FIELDVAULT_AUDIT_TRUSTED_KEYS after a key change); offline")
    .argument("<signing-key-file>", "the base64 Ed25519 seed file (FIELDVAULT_SIGNING_KEY_FILE)")
    .action(async (file: string) => {
      await readySodium();
      const key = loadSigningKey(file);
      out(`${Buffer.from(key.publicKey).toString("base64")}  ${key.keyId}`);
    });

  addFilters(addConnectOptions(audit.command("export")))
    .description("write every matching entry (all pages) as CSV or JSON Lines")
    .addOption(new Option("--format <format>", "output format").choices(["csv", "jsonl"]).default("jsonl"))
    .option("--out <file>", "write to this file instead of stdout (created with mode 0600)")
    .action(async (o: ConnectOptions & FilterOptions & { format: "csv" | "jsonl"; out?: string }) => {
      const { log, md } = client(o);
      const sink: Writable = o.out ? createWriteStream(o.out, { mode: 0o600 }) : process.stdout;
      let n = 0;
      try {
        if (o.format === "csv") await write(sink, CSV_COLUMNS.join(",") + "\n");
        let token = "";
        do {
          token = await queryPage(log, md, request(o, 1000, token), async (e) => {
            const r = entryRecord(e);
            n++;
            await write(sink, o.format === "csv" ? CSV_COLUMNS.map((c) => csvCell(r[c])).join(",") + "\n" : jsonLine(r) + "\n");
          });
        } while (token);
      } finally {
        log.close();
        if (o.out) await new Promise<void>((resolve) => (sink as ReturnType<typeof createWriteStream>).end(resolve));
      }
      if (o.out) process.stderr.write(`exported ${n} entries to ${o.out}\n`);
    });
}
