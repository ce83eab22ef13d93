import { readFileSync } from "node:fs";
import type { ServiceError } from "@grpc/grpc-js";
import type { Command } from "commander";
import { DEV_SIGNING_KEY_FILE } from "../config/config";
import { loadSigningKey } from "../config/signing-key";
import { readySodium } from "../crypto/sodium";
import { verifyReceipt } from "../domain/erasure-receipt";
import { AccessLogClient, type SubjectReportResponse } from "../gen/fieldvault/v1/access_log";
import { addConnectOptions, type ConnectOptions, credentials, metadata } from "./connect";

/** `fieldvault audit subject-report | verify-receipt`: data-subject rights (DESIGN §14). */

const out = (line = "") => process.stdout.write(line + "\n");
const iso = (d: Date | undefined) => (d ? d.toISOString() : "");
// eslint-disable-next-line no-control-regex
const safe = (s: string) => s.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, "?");

function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
}

/** base64 or base64url, as protobuf's JSON mapping (and grpcurl) print bytes. */
function bytesField(v: unknown, name: string): Uint8Array {
  if (typeof v !== "string" || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) throw new Error(`${name}: not base64`);
  return new Uint8Array(Buffer.from(v, "base64"));
}

function publicKeys(list: string | undefined): Uint8Array[] {
  return (list ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter(Boolean)
    .map((k) => {
      const b = Buffer.from(k, "base64");
      if (b.length !== 32) throw new Error("--public-key / FIELDVAULT_AUDIT_TRUSTED_KEYS: base64 Ed25519 public keys (32 bytes), comma-separated");
      return new Uint8Array(b);
    });
}

/** The keys a receipt may be signed with: --public-key, else the configured signing key's public half and the trusted keys. */
function trustedKeys(flag: string | undefined): Uint8Array[] {
  if (flag) return publicKeys(flag);
  const keys = publicKeys(process.env.FIELDVAULT_AUDIT_TRUSTED_KEYS);
  try {
    keys.unshift(loadSigningKey(process.env.FIELDVAULT_SIGNING_KEY_FILE ?? DEV_SIGNING_KEY_FILE).publicKey);
  } catch (err) {
    if (keys.length === 0) throw err;
  }
  return keys;
}

function report(log: AccessLogClient, o: ConnectOptions, ref: string, pageSize: number, pageToken: string): Promise<SubjectReportResponse> {
  return new Promise((resolve, reject) =>
    log.subjectReport({ subjectRef: ref, pageSize, pageToken }, metadata(o), (err: ServiceError | null, res: SubjectReportResponse) => (err ? reject(err) : resolve(res))),
  );
}

export function registerSubjectRights(audit: Command): void {
  addConnectOptions(audit.command("subject-report"))
    .description("what the vault holds about a data subject and who looked at it (needs subject_report); never plaintext")
    .argument("<subject-ref>", "the data-subject reference given at tokenize time")
    .option("--limit <n>", "log entries per page (max 5000)", (v) => Number(v), 500)
    .option("--all", "follow every page of log entries")
    .option("--json", "one JSON document per page instead of tables")
    .action(async (ref: string, o: ConnectOptions & { limit: number; all?: boolean; json?: boolean }) => {
      if (!Number.isInteger(o.limit) || o.limit < 1 || o.limit > 5000) throw new Error("--limit must be 1..5000");
      const log = new AccessLogClient(o.address, credentials(o));
      try {
        let token = "";
        let first = true;
        do {
          const r = await report(log, o, ref, o.limit, token);
          token = r.nextPageToken;
          if (o.json) {
            out(
              JSON.stringify({
                subject_ref: r.subjectRef,
                tokens: r.tokens.map((t) => ({ token: t.token, category: t.category, masked: t.masked, created_at: iso(t.createdAt), expires_at: iso(t.expiresAt) })),
                entries: r.entries.map((e) => ({ sequence: e.sequence, time: iso(e.time), caller: e.caller, action: e.action, token: e.token, category: e.category, purpose: e.purpose, outcome: e.outcome })),
                next_page_token: r.nextPageToken,
              }),
            );
            continue;
          }
          if (first) {
            out(`subject ${safe(r.subjectRef)}: ${r.tokens.length} token(s) held`);
            if (r.tokens.length) {
              const rows = [["TOKEN", "CATEGORY", "MASKED", "CREATED", "EXPIRES"]];
              for (const t of r.tokens) rows.push([t.token, t.category, safe(t.masked), iso(t.createdAt), iso(t.expiresAt) || "-"]);
              for (const line of table(rows)) out(line);
            }
            out();
            out("access-log entries about these tokens, newest first:");
          }
          if (r.entries.length) {
            const rows = [["SEQ", "TIME", "CALLER", "ACTION", "TOKEN", "CATEGORY", "PURPOSE", "OUTCOME"]];
            for (const e of r.entries) rows.push([String(e.sequence), iso(e.time), safe(e.caller), e.action, e.token, e.category || "-", e.purpose || "-", e.outcome]);
            for (const line of table(rows)) out(line);
          } else if (first) out("none");
          first = false;
        } while (o.all && token);
        if (token) process.stderr.write("more entries: add --all\n");
      } finally {
        log.close();
      }
    });

  audit
    .command("verify-receipt")
    .description("check a DeleteSubject erasure receipt offline; exit 0 when valid, 2 with the reason when not")
    .argument("<file>", "the receipt in protobuf JSON (statement and signature base64, key_id or keyId), as grpcurl prints it")
    .option("--public-key <base64>", "trust only this Ed25519 public key (comma-separated for several)")
    .action(async (file: string, o: { publicKey?: string }) => {
      await readySodium();
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
      } catch (err) {
        throw new Error(`${file}: not a JSON receipt (${(err as Error).message})`);
      }
      // Accept the receipt itself, or a whole DeleteSubject response that carries one.
      const r = (doc.receipt && typeof doc.receipt === "object" ? doc.receipt : doc) as Record<string, unknown>;
      const keyId = (r.key_id ?? r.keyId ?? "") as string;
      const check = verifyReceipt({ statement: bytesField(r.statement, "statement"), signature: bytesField(r.signature, "signature"), keyId: String(keyId) }, trustedKeys(o.publicKey));
      if (!check.ok) {
        process.stderr.write(`INVALID: ${check.reason}\n`);
        process.exitCode = 2;
        return;
      }
      const s = check.statement;
      out(`VALID: erasure receipt ${s.receipt_id} signed by ${s.key_id}`);
      out(`  subject ${safe(s.subject_ref)} at ${s.time} by ${safe(s.erased_by)}: ${s.erased_tokens.length} erased, ${s.unlinked_tokens.length} unlinked`);
      out(`  access-log sequence ${s.access_log.sequence} (chain ${s.access_log.chain_id} #${s.access_log.chain_seq}, request ${s.access_log.request_id})`);
    });
}
