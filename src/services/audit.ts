import { type ChainedEntry, checkpointMessage, entryHash, GENESIS_HASH, type LogDraft, logDraft } from "../domain/access-log";
import type { CallContext } from "../domain/context";
import { denied, invalid, VaultError } from "../domain/errors";
import { looksLikePan } from "../domain/token-formats";
import type { Policy } from "../domain/policy";
import { verifySignature } from "../crypto/signing";
import type { ChainSpan, LogQueryFilter, StoredCheckpoint } from "../storage/postgres/log-store";
import type { CommitQueue } from "./commit-queue";

export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1000;
const SCAN_PAGE = 1000;
const MAX_FILTER = 512;

type Entry = ChainedEntry & { seq: number };

/** The reads Query and Verify need; implemented over SQL in storage/postgres/log-store.ts. */
export interface AuditReads {
  query(filter: LogQueryFilter, limit: number): Promise<Entry[]>;
  chains(range: { since?: Date; until?: Date }): Promise<ChainSpan[]>;
  chainEntries(chainId: string, after: number, upTo: number | undefined, limit: number): Promise<Entry[]>;
  chainCheckpoints(chainId: string, after: { chainSeq: number; id: number }, upTo: number | undefined, limit: number): Promise<StoredCheckpoint[]>;
  findChainEntryBy(chainId: string, column: "hash" | "prev_hash", value: Uint8Array, exceptSeq: number): Promise<{ seq: number; chainSeq: number } | undefined>;
}

export interface AuditStore extends AuditReads {
  /** Runs `fn` on one consistent, read-only snapshot of the log. */
  snapshot<T>(fn: (reads: AuditReads) => Promise<T>): Promise<T>;
}

export interface AuditDeps {
  policy: () => Policy;
  commits: Pick<CommitQueue, "append">;
  store: AuditStore;
  /** Ed25519 public keys whose checkpoints are genuine: the configured signing key plus retired ones. Never read from the database. */
  trustedKeys: readonly Uint8Array[];
  instanceId: string;
  /** Every spelling of a token (opaque id, format-preserving alias): a query by either finds entries logged under both. */
  tokenSpellings?: (token: string) => Promise<string[]>;
  now?: () => Date;
}

export interface QueryRequest {
  caller: string;
  token: string;
  category: string;
  purpose: string;
  outcome: string;
  action: string;
  since?: Date;
  until?: Date;
  pageSize: number;
  pageToken: string;
}

export interface QueryPage {
  /** Newest first; each with the cursor for the page after it ("" on the very last matching entry). */
  entries: { entry: Entry; nextPageToken: string }[];
}

export type Problem = "modified" | "missing" | "reordered" | "bad_signature";

export interface VerifyResult {
  ok: boolean;
  entriesChecked: number;
  checkpointsChecked: number;
  firstBrokenSequence: number;
  problem: Problem | "";
  detail: string;
}

interface Finding {
  seq: number;
  problem: Problem;
  detail: string;
}

// ---- page cursor: opaque to callers, "v2:<time ms>:<seq>" in base64url inside ----
// Pages follow (at, seq) newest first, the order of the (caller|token, at DESC, seq DESC) indexes, so a
// filtered page reads only its own rows, however long the log.

export function encodeCursor(entry: { at: Date; seq: number }): string {
  return Buffer.from(`v2:${entry.at.getTime()}:${entry.seq}`).toString("base64url");
}

function decodeCursor(token: string): { at: Date; seq: number } {
  const m = /^v2:(\d{1,15}):(\d{1,16})$/.exec(Buffer.from(token, "base64url").toString("utf8"));
  if (!m || !/^[A-Za-z0-9_-]+$/.test(token)) throw invalid("page_token: not a cursor returned by Query");
  return { at: new Date(Number(m[1])), seq: Number(m[2]) };
}

function checkFilter(field: string, value: string): void {
  if (value.length > MAX_FILTER) throw invalid(`${field}: longer than ${MAX_FILTER} characters`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) throw invalid(`${field}: contains control characters`);
}

function checkRange(since: Date | undefined, until: Date | undefined): void {
  if (since && until && since >= until) throw invalid("since: must be before until");
}

const same = (a: Uint8Array, b: Uint8Array) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex").slice(0, 16);

/** AccessLog use cases: query the log and verify its hash chains and signed checkpoints. */
export function createAudit(deps: AuditDeps) {
  const now = deps.now ?? (() => new Date());

  const draft = (ctx: CallContext, action: string, fields: Partial<LogDraft> = {}): LogDraft =>
    logDraft(ctx, deps.instanceId, now(), action, fields);

  /** Only log readers; a refusal is itself logged (best effort: the caller learns nothing either way). */
  async function authorize(ctx: CallContext, action: string): Promise<void> {
    if (deps.policy().canReadLog(ctx.identity)) return;
    const err = denied(`caller ${ctx.identity} may not read the access log`);
    await deps.commits.append([draft(ctx, action, { outcome: "denied", detail: err.message })]).catch(() => undefined);
    throw err;
  }

  async function refuseInvalid(ctx: CallContext, action: string, check: () => void): Promise<void> {
    try {
      check();
    } catch (err) {
      if (err instanceof VaultError) {
        await deps.commits.append([draft(ctx, action, { outcome: "invalid_argument", detail: err.message })]).catch(() => undefined);
      }
      throw err;
    }
  }

  async function query(ctx: CallContext, req: QueryRequest): Promise<QueryPage> {
    await authorize(ctx, "log_query");
    let before: { at: Date; seq: number } | undefined;
    const pageSize = Math.min(req.pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    await refuseInvalid(ctx, "log_query", () => {
      for (const f of ["caller", "token", "category", "purpose", "outcome", "action"] as const) checkFilter(f, req[f]);
      checkRange(req.since, req.until);
      if (looksLikePan(req.token)) throw invalid("token: a Luhn-valid card number is not a token (format-preserving tokens fail the Luhn check)");
      if (req.pageToken) before = decodeCursor(req.pageToken);
    });
    const filter: LogQueryFilter = {
      caller: req.caller || undefined,
      token: req.token || undefined,
      category: req.category || undefined,
      purpose: req.purpose || undefined,
      outcome: req.outcome || undefined,
      action: req.action || undefined,
      since: req.since,
      until: req.until,
      before,
    };
    // PCI DSS 10.2.1: reading the log is itself logged, durably, before anything is returned.
    const shown = Object.fromEntries(Object.entries({ ...filter, pageSize }).filter(([, v]) => v !== undefined));
    await deps.commits.append([draft(ctx, "log_query", { detail: JSON.stringify(shown) })]);
    if (filter.token && deps.tokenSpellings) filter.token = await deps.tokenSpellings(req.token);
    const rows = await deps.store.query(filter, pageSize + 1);
    const more = rows.length > pageSize;
    const page = rows.slice(0, pageSize);
    return {
      entries: page.map((entry, i) => ({ entry, nextPageToken: i === page.length - 1 && !more ? "" : encodeCursor(entry) })),
    };
  }

  /**
   * Walks one chain in chain_seq order, page by page, and returns its first problem. Strict mode
   * (no `since`) starts at chain_seq 1 from the genesis hash; a ranged walk anchors on the first
   * entry in range.
   */
  async function verifyChain(
    store: AuditReads,
    span: ChainSpan,
    strict: boolean,
    upTo: number | undefined,
    counts: { entries: number; checkpoints: number },
  ): Promise<Finding | undefined> {
    const chainId = span.chainId;
    let expected = strict ? 1 : (span.lo ?? 1);
    let prevHash: Uint8Array | undefined = strict ? GENESIS_HASH : undefined;
    let prev: Entry | undefined;
    let unprovenFrom: number | undefined; // first global seq not yet covered by a good checkpoint
    let cps: StoredCheckpoint[] = [];
    // Strict: every checkpoint of the chain; ranged: those sealing an entry in range.
    let cpAfter = { chainSeq: strict ? -1 : expected - 1, id: 0 };
    let cpsDone = false;
    const nextCheckpoint = async (): Promise<StoredCheckpoint | undefined> => {
      if (cps.length === 0 && !cpsDone) {
        cps = await store.chainCheckpoints(chainId, cpAfter, upTo, SCAN_PAGE);
        if (cps.length < SCAN_PAGE) cpsDone = true;
        const last = cps[cps.length - 1];
        if (last) cpAfter = { chainSeq: last.chainSeq, id: last.id };
      }
      return cps[0];
    };
    const signedByTrusted = (cp: StoredCheckpoint) =>
      deps.trustedKeys.some((pk) => verifySignature(pk, checkpointMessage(cp.chainId, cp.chainSeq, cp.hash, cp.at), cp.signature));

    const brokenLink = async (e: Entry, expectedPrev: Uint8Array): Promise<Finding> => {
      // The entry that belongs here (it links to our predecessor) sits elsewhere in the chain: reordered.
      const rightful = await store.findChainEntryBy(chainId, "prev_hash", expectedPrev, e.seq);
      if (rightful) {
        return {
          seq: Math.min(e.seq, rightful.seq),
          problem: "reordered",
          detail: `chain ${chainId}: chain_seq ${e.chainSeq} holds the entry that belongs elsewhere; the entry that follows chain_seq ${e.chainSeq - 1} is at chain_seq ${rightful.chainSeq}`,
        };
      }
      if (!same(entryHash(e.prevHash, e), e.hash)) {
        return { seq: e.seq, problem: "modified", detail: `chain ${chainId}: chain_seq ${e.chainSeq} does not match its hash` };
      }
      const pointed = await store.findChainEntryBy(chainId, "hash", e.prevHash, e.seq);
      if (pointed) {
        return { seq: Math.min(e.seq, pointed.seq), problem: "reordered", detail: `chain ${chainId}: chain_seq ${e.chainSeq} follows chain_seq ${pointed.chainSeq}, not ${e.chainSeq - 1}` };
      }
      // Self-consistent but linked to a hash nobody has: the predecessor was rewritten (hash recomputed).
      return {
        seq: prev?.seq ?? e.seq,
        problem: "modified",
        detail: prev
          ? `chain ${chainId}: chain_seq ${prev.chainSeq} was rewritten (chain_seq ${e.chainSeq} links to ${hex(e.prevHash)}…, not ${hex(expectedPrev)}…)`
          : `chain ${chainId}: the first entry does not start from the genesis hash`,
      };
    };

    let after = expected - 1;
    for (;;) {
      const page = await store.chainEntries(chainId, after, upTo, SCAN_PAGE);
      for (const e of page) {
        if (e.chainSeq !== expected) {
          return {
            seq: e.seq,
            problem: "missing",
            detail: `chain ${chainId}: chain_seq ${expected}${e.chainSeq - 1 > expected ? `..${e.chainSeq - 1}` : ""} missing before seq ${e.seq}`,
          };
        }
        const expectedPrev: Uint8Array = prevHash ?? e.prevHash;
        if (!same(e.prevHash, expectedPrev)) return brokenLink(e, expectedPrev);
        if (!same(entryHash(e.prevHash, e), e.hash)) {
          return { seq: e.seq, problem: "modified", detail: `chain ${chainId}: chain_seq ${e.chainSeq} does not match its hash` };
        }
        // (No check that the global seq grows with chain_seq: one multi-row INSERT may number its
        // rows in any order, and seq is not part of the hashed form. The chain order is what counts.)
        unprovenFrom ??= e.seq;
        counts.entries++;
        for (let cp = await nextCheckpoint(); cp && cp.chainSeq <= e.chainSeq; cp = await nextCheckpoint()) {
          cps.shift();
          counts.checkpoints++;
          if (!signedByTrusted(cp)) {
            return { seq: e.seq, problem: "bad_signature", detail: `chain ${chainId}: checkpoint at chain_seq ${cp.chainSeq} (key ${cp.keyId}) is not signed by a trusted key` };
          }
          if (cp.chainSeq < e.chainSeq) continue; // sealed an entry before the range walked
          if (!same(cp.hash, e.hash)) {
            return {
              seq: unprovenFrom ?? e.seq,
              problem: "modified",
              detail: `chain ${chainId}: entries up to chain_seq ${cp.chainSeq} do not match the signed checkpoint; the chain was rewritten at or after seq ${unprovenFrom}`,
            };
          }
          unprovenFrom = undefined;
        }
        prevHash = e.hash;
        prev = e;
        expected++;
      }
      if (page.length < SCAN_PAGE) break;
      after = page[page.length - 1]!.chainSeq;
    }
    // Checkpoints beyond the last entry: the chain was cut short (or the checkpoint is forged).
    for (let cp = await nextCheckpoint(); cp; cp = await nextCheckpoint()) {
      cps.shift();
      counts.checkpoints++;
      if (!signedByTrusted(cp)) {
        return { seq: prev?.seq ?? 0, problem: "bad_signature", detail: `chain ${chainId}: checkpoint at chain_seq ${cp.chainSeq} (key ${cp.keyId}) is not signed by a trusted key` };
      }
      return {
        seq: prev?.seq ?? 0,
        problem: "missing",
        detail: `chain ${chainId}: a signed checkpoint seals chain_seq ${cp.chainSeq} but the chain ends at chain_seq ${prev?.chainSeq ?? 0}; entries after ${prev ? `seq ${prev.seq}` : "its start"} were removed`,
      };
    }
    return undefined;
  }

  async function verify(ctx: CallContext, req: { since?: Date; until?: Date }): Promise<VerifyResult> {
    await authorize(ctx, "log_verify");
    await refuseInvalid(ctx, "log_verify", () => checkRange(req.since, req.until));
    const counts = { entries: 0, checkpoints: 0 };
    const first = await deps.store.snapshot(async (store) => {
      let earliest: Finding | undefined;
      for (const span of await store.chains(req)) {
        // A ranged walk stops at the last entry in range; otherwise it runs to the end of the chain.
        const upTo = req.until ? span.hi : undefined;
        if (req.since && span.lo === undefined) continue; // only checkpoints fall in the range
        const found = await verifyChain(store, span, !req.since, upTo, counts);
        if (found && (!earliest || found.seq < earliest.seq)) earliest = found;
      }
      return earliest;
    });
    const result: VerifyResult = first
      ? { ok: false, entriesChecked: counts.entries, checkpointsChecked: counts.checkpoints, firstBrokenSequence: first.seq, problem: first.problem, detail: first.detail }
      : { ok: true, entriesChecked: counts.entries, checkpointsChecked: counts.checkpoints, firstBrokenSequence: 0, problem: "", detail: "" };
    const range = JSON.stringify(Object.fromEntries(Object.entries({ since: req.since, until: req.until }).filter(([, v]) => v)));
    await deps.commits.append([
      draft(ctx, "log_verify", {
        outcome: result.ok ? "ok" : "broken",
        detail: result.ok
          ? `range=${range} entries=${result.entriesChecked} checkpoints=${result.checkpointsChecked}`
          : `range=${range} first_broken_sequence=${result.firstBrokenSequence} problem=${result.problem}`,
      }),
    ]);
    return result;
  }

  return { query, verify };
}

export type Audit = ReturnType<typeof createAudit>;
