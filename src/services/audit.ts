import { type ChainedEntry, entryHash, GENESIS_HASH, type LogDraft, logDraft } from "../domain/access-log";
import { checkpointHash, type LiveLogState, parseCheckpointJson, signedByTrusted, type SignedCheckpointV2, ZERO_HASH } from "../domain/checkpoint";
import type { CallContext } from "../domain/context";
import { denied, invalid, VaultError } from "../domain/errors";
import { looksLikePan } from "../domain/token-formats";
import type { Policy } from "../domain/policy";
import type { ChainSpan, LogQueryFilter, StoredCheckpoint } from "../storage/postgres/log-store";
import { PRIMARY, type ReadSource } from "../storage/postgres/read-replica";
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
  /** Every v2 checkpoint in (key_id, number, id) order, one page after `after`. */
  keyCheckpoints(after: { keyId: string; number: number; id: number }, limit: number): Promise<StoredCheckpoint[]>;
  checkpointsNumbered(keyId: string, number: number): Promise<StoredCheckpoint[]>;
  /** A chain's entry at `chainSeq`, or its last entry. */
  chainEntryAt(chainId: string, chainSeq?: number): Promise<{ seq: number; chainSeq: number; hash: Uint8Array } | undefined>;
}

export interface AuditStore extends AuditReads {
  /** Runs `fn` on one consistent, read-only snapshot of the log. */
  snapshot<T>(fn: (reads: AuditReads) => Promise<T>): Promise<T>;
}

export interface AuditDeps {
  policy: () => Policy;
  commits: Pick<CommitQueue, "append">;
  store: AuditStore;
  /**
   * Where Query and Verify read (a replica when FIELDVAULT_DATABASE_READ_URL is set, falling back to
   * the primary); unset → `store`. Entries this service appends always go to the primary (`commits`).
   */
  readStore?: <T>(fn: (store: AuditStore, source: ReadSource) => Promise<T>) => Promise<{ value: T; source: ReadSource }>;
  /** Ed25519 public keys whose checkpoints are genuine: the configured signing key plus retired ones. Never read from the database. */
  trustedKeys: readonly Uint8Array[];
  instanceId: string;
  /** Entries younger than this that no checkpoint covers yet are counted but do not fail Verify. */
  unsealedGraceMs: number;
  /**
   * This instance's own writer: its in-memory chain heads and newest checkpoint, and reads of the
   * database it writes to (the primary, even when `store` is a replica) to compare them with.
   */
  live?: { state: () => LiveLogState; reads: Pick<AuditReads, "chainEntryAt" | "checkpointsNumbered"> };
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
  /** Which database answered (a replica may lag: entries newer than its lag can be missing). */
  source: ReadSource;
}

/**
 * modified | missing | reordered | bad_signature as before; `unsealed`: entries older than the grace
 * window that no signed checkpoint covers; `unsigned_chain`: a chain with no signed "chain opened"
 * checkpoint; `appended`: entries after the position a chain was closed at, or beyond anything its
 * live writer wrote.
 */
export type Problem = "modified" | "missing" | "reordered" | "bad_signature" | "unsealed" | "unsigned_chain" | "appended";

export interface VerifyResult {
  ok: boolean;
  entriesChecked: number;
  checkpointsChecked: number;
  firstBrokenSequence: number;
  problem: Problem | "";
  detail: string;
  servedByReplica: boolean;
  replicaLagSeconds: number;
  /** Entries in range that no signed checkpoint covers (young ones included). */
  unsealedEntries: number;
}

export interface VerifyRequest {
  since?: Date;
  until?: Date;
  /** One published checkpoint (a line of the anchor file or an "audit checkpoint" log line). */
  anchor?: string;
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
  const readStore = deps.readStore ?? (async <T>(fn: (store: AuditStore, source: ReadSource) => Promise<T>) => ({ value: await fn(deps.store, PRIMARY), source: PRIMARY }));

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
    const { value: rows, source } = await readStore((store) => store.query(filter, pageSize + 1));
    const more = rows.length > pageSize;
    const page = rows.slice(0, pageSize);
    return {
      entries: page.map((entry, i) => ({ entry, nextPageToken: i === page.length - 1 && !more ? "" : encodeCursor(entry) })),
      source,
    };
  }

  type StoredV2 = Extract<StoredCheckpoint, { version: 2 }>;
  const isV2 = (cp: StoredCheckpoint): cp is StoredV2 => cp.version === 2;
  const trusted = (cp: StoredCheckpoint | SignedCheckpointV2) => signedByTrusted(deps.trustedKeys, "version" in cp ? cp : { version: 2, ...cp });
  const earliest = (...fs: (Finding | undefined)[]) =>
    fs.reduce<Finding | undefined>((a, f) => (f && (!a || f.seq < a.seq) ? f : a), undefined);
  /** The global seq of the entry a checkpoint seals (its chain's first entry for "chain opened"), else 0. */
  const sealedSeq = async (reads: Pick<AuditReads, "chainEntryAt">, cp: { chainId: string; size: number }) =>
    (await reads.chainEntryAt(cp.chainId, Math.max(cp.size, 1)))?.seq ?? (await reads.chainEntryAt(cp.chainId))?.seq ?? 0;
  const describe = (cp: { keyId: string; number: number; chainId: string; size: number }) =>
    `checkpoint ${cp.number} of key ${cp.keyId} (chain ${cp.chainId}, size ${cp.size})`;

  /**
   * Walks one chain in chain_seq order, page by page, and returns its first problem. Strict mode
   * (no `since`) starts at chain_seq 1 from the genesis hash and requires the signed "chain opened"
   * checkpoint; a ranged walk anchors on the first entry in range.
   */
  async function verifyChain(
    store: AuditReads,
    span: ChainSpan,
    strict: boolean,
    upTo: number | undefined,
    counts: { entries: number; checkpoints: number; unsealed: number },
    cutoff: Date,
  ): Promise<Finding | undefined> {
    const chainId = span.chainId;
    let expected = strict ? 1 : (span.lo ?? 1);
    let prevHash: Uint8Array | undefined = strict ? GENESIS_HASH : undefined;
    let prev: Entry | undefined;
    let unprovenFrom: number | undefined; // first global seq not yet covered by a good checkpoint
    // Entries no good checkpoint covers yet: how many, the first, and the first older than the grace window.
    let pending: { count: number; first?: Entry; firstOld?: Entry } = { count: 0 };
    let opened = false; // a signed "chain opened" (size 0) checkpoint
    let legacy = false; // v1 checkpoints (before numbering): no opening record exists
    let closedAt: number | undefined; // a signed checkpoint closed the chain here
    let cps: StoredCheckpoint[] = [];
    // Strict: every checkpoint of the chain; ranged: those sealing an entry in range.
    let cpAfter = { chainSeq: strict ? -1 : expected - 1, id: 0 };
    let cpsDone = false;
    const nextCheckpoint = async (): Promise<StoredCheckpoint | undefined> => {
      if (cps.length === 0 && !cpsDone) {
        cps = await store.chainCheckpoints(chainId, cpAfter, upTo, SCAN_PAGE);
        if (cps.length < SCAN_PAGE) cpsDone = true;
        const last = cps[cps.length - 1];
        if (last) cpAfter = { chainSeq: last.size, id: last.id };
      }
      return cps[0];
    };
    const badSignature = (seq: number, cp: StoredCheckpoint): Finding => ({
      seq,
      problem: "bad_signature",
      detail: `chain ${chainId}: checkpoint at chain_seq ${cp.size} (key ${cp.keyId}) is not signed by a trusted key`,
    });
    const accept = (cp: StoredCheckpoint) => {
      if (cp.version === 1) legacy = true;
      else {
        if (cp.size === 0) opened = true;
        if (cp.closed) closedAt = Math.min(closedAt ?? Infinity, cp.size);
      }
    };

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
        if (closedAt !== undefined && e.chainSeq > closedAt) {
          return {
            seq: e.seq,
            problem: "appended",
            detail: `chain ${chainId}: a signed checkpoint closed the chain at chain_seq ${closedAt}, yet chain_seq ${e.chainSeq} follows: written by someone other than its writer`,
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
        pending.count++;
        pending.first ??= e;
        if (!pending.firstOld && e.at < cutoff) pending.firstOld = e;
        for (let cp = await nextCheckpoint(); cp && cp.size <= e.chainSeq; cp = await nextCheckpoint()) {
          cps.shift();
          counts.checkpoints++;
          if (!trusted(cp)) return badSignature(e.seq, cp);
          accept(cp);
          if (cp.size < e.chainSeq) continue; // sealed an entry before the range walked (or opened the chain)
          if (!same(cp.head, e.hash)) {
            return {
              seq: unprovenFrom ?? e.seq,
              problem: "modified",
              detail: `chain ${chainId}: entries up to chain_seq ${cp.size} do not match the signed checkpoint; the chain was rewritten at or after seq ${unprovenFrom}`,
            };
          }
          unprovenFrom = undefined;
          pending = { count: 0 };
        }
        if (strict && e.chainSeq === 1) {
          // A chain the vault wrote opens with a signed checkpoint committed with its first entries;
          // one without it (and without legacy v1 checkpoints) was written by someone else.
          await nextCheckpoint();
          if (!opened && !legacy && !cps.some((cp) => cp.version === 1 && trusted(cp))) {
            return {
              seq: e.seq,
              problem: "unsigned_chain",
              detail: `chain ${chainId}: no signed "chain opened" checkpoint; its entries were not written by a vault holding a trusted key`,
            };
          }
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
      if (!trusted(cp)) return badSignature(prev?.seq ?? 0, cp);
      accept(cp);
      if (cp.size <= (prev?.chainSeq ?? 0)) continue; // "chain opened" of a chain with no entries in range
      return {
        seq: prev?.seq ?? 0,
        problem: "missing",
        detail: `chain ${chainId}: a signed checkpoint seals chain_seq ${cp.size} but the chain ends at chain_seq ${prev?.chainSeq ?? 0}; entries after ${prev ? `seq ${prev.seq}` : "its start"} were removed`,
      };
    }
    if (pending.count && upTo !== undefined) {
      // A ranged walk stops at the range's end; a later signed checkpoint of the chain covers the rest.
      const later = await store.chainCheckpoints(chainId, { chainSeq: upTo, id: Number.MAX_SAFE_INTEGER }, undefined, 16);
      if (later.some((cp) => trusted(cp))) pending = { count: 0 };
    }
    counts.unsealed += pending.count;
    if (pending.firstOld) {
      const last = prev!;
      return {
        seq: pending.firstOld.seq,
        problem: "unsealed",
        detail: `chain ${chainId}: chain_seq ${pending.first!.chainSeq}..${last.chainSeq} (${pending.count} entries) are covered by no signed checkpoint and are older than the ${deps.unsealedGraceMs / 1000} s grace window: their writer stopped without sealing them, or someone else wrote them`,
      };
    }
    return undefined;
  }

  /** Every key's checkpoints must be numbered 1, 2, 3… with each covering the one before it. */
  async function verifyNumbering(store: AuditReads): Promise<Finding | undefined> {
    let after = { keyId: "", number: -1, id: 0 };
    let key: { id: string; next: number; prev: Uint8Array; last?: StoredV2 } | undefined;
    for (;;) {
      const page = await store.keyCheckpoints(after, SCAN_PAGE);
      for (const cp of page) {
        if (!isV2(cp) || !trusted(cp)) continue; // the chain walk names it (bad_signature)
        if (key?.id !== cp.keyId) key = { id: cp.keyId, next: 1, prev: ZERO_HASH };
        const h = checkpointHash(cp);
        if (cp.number < key.next) {
          if (key.last && same(h, checkpointHash(key.last))) continue; // the same row twice
          return { seq: await sealedSeq(store, cp), problem: "modified", detail: `two different checkpoints are numbered ${cp.number} for key ${cp.keyId}` };
        }
        if (cp.number > key.next) {
          const lost = cp.number - 1 > key.next ? `${key.next}..${cp.number - 1}` : `${key.next}`;
          return {
            seq: await sealedSeq(store, cp),
            problem: "missing",
            detail: `checkpoints ${lost} of key ${cp.keyId} are missing (deleted): ${describe(cp)} follows ${key.last ? `checkpoint ${key.last.number}` : "nothing"}`,
          };
        }
        if (!same(cp.prev, key.prev)) {
          return { seq: await sealedSeq(store, cp), problem: "modified", detail: `${describe(cp)} does not cover checkpoint ${cp.number - 1} of its key: the sequence was rewritten` };
        }
        key = { id: cp.keyId, next: cp.number + 1, prev: h, last: cp };
      }
      if (page.length < SCAN_PAGE) break;
      const last = page[page.length - 1]!;
      after = { keyId: last.keyId, number: isV2(last) ? last.number : 0, id: last.id };
    }
    return undefined;
  }

  /** The database must still hold the anchored checkpoint (the rest of Verify proves what it covers). */
  async function verifyAnchor(store: AuditReads, anchor: SignedCheckpointV2): Promise<Finding | undefined> {
    const rows = await store.checkpointsNumbered(anchor.keyId, anchor.number);
    const h = checkpointHash(anchor);
    if (rows.some((r) => isV2(r) && same(checkpointHash(r), h))) return undefined;
    const seq = (await store.chainEntryAt(anchor.chainId, anchor.size))?.seq ?? (await store.chainEntryAt(anchor.chainId))?.seq ?? 0;
    return rows.length
      ? { seq, problem: "modified", detail: `the anchored ${describe(anchor)} was replaced in the database by a different checkpoint` }
      : { seq, problem: "missing", detail: `the anchored ${describe(anchor)} is not in the database: checkpoints (and what they sealed) were deleted` };
  }

  /** This instance's own chain heads and newest checkpoint, compared with the database it writes to. */
  async function verifyLive(): Promise<Finding | undefined> {
    if (!deps.live) return undefined;
    const { reads } = deps.live;
    const before = deps.live.state(); // read first: everything it calls committed is in the database
    const found: (Finding | undefined)[] = [];
    for (const c of before.chains) {
      if (c.committedSeq === 0) continue;
      const row = await reads.chainEntryAt(c.chainId, c.committedSeq);
      if (!row) {
        const last = await reads.chainEntryAt(c.chainId);
        found.push({
          seq: last?.seq ?? 0,
          problem: "missing",
          detail: `chain ${c.chainId}: this running instance committed chain_seq ${c.committedSeq}, but the database ends at chain_seq ${last?.chainSeq ?? 0}: the tail was deleted`,
        });
      } else if (!same(row.hash, c.committedHead)) {
        found.push({ seq: row.seq, problem: "modified", detail: `chain ${c.chainId}: chain_seq ${c.committedSeq} differs from the entry this running instance committed there` });
      }
      // A chain this writer left after a failed write: whatever follows its last commit must be
      // what that write tried (its COMMIT may have gone through), else someone else's (a conflict).
      const mine = c.attempted?.[0];
      const next = c.attempted ? await reads.chainEntryAt(c.chainId, c.committedSeq + 1) : undefined;
      if (next && (!mine || !same(next.hash, mine.hash))) {
        found.push({
          seq: next.seq,
          problem: "appended",
          detail: `chain ${c.chainId}: chain_seq ${c.committedSeq + 1} was written by someone other than this instance, its writer (the collision that made it move to a new chain)`,
        });
      }
    }
    const cp = before.checkpoint;
    if (cp) {
      const rows = await reads.checkpointsNumbered(cp.keyId, cp.number);
      if (!rows.some((r) => isV2(r) && same(checkpointHash(r), checkpointHash(cp)))) {
        found.push({ seq: await sealedSeq(reads, cp), problem: "missing", detail: `${describe(cp)}, known to this running instance, is no longer in the database` });
      }
    }
    const now = deps.live.state(); // read last: nothing beyond what it has chained is ours
    for (const c of now.chains) {
      const last = await reads.chainEntryAt(c.chainId);
      if (last && last.chainSeq > c.chainedSeq) {
        const first = await reads.chainEntryAt(c.chainId, c.chainedSeq + 1);
        found.push({
          seq: first?.seq ?? last.seq,
          problem: "appended",
          detail: `chain ${c.chainId}: chain_seq ${c.chainedSeq + 1}..${last.chainSeq} were written by someone other than this instance, its writer`,
        });
      }
    }
    return earliest(...found);
  }

  async function verify(ctx: CallContext, req: VerifyRequest): Promise<VerifyResult> {
    await authorize(ctx, "log_verify");
    let anchor: SignedCheckpointV2 | undefined;
    await refuseInvalid(ctx, "log_verify", () => {
      checkRange(req.since, req.until);
      if (req.anchor === undefined || req.anchor === "") return;
      if (req.anchor.length > 4096) throw invalid("anchor: longer than 4096 characters");
      const parsed = parseCheckpointJson(req.anchor.trim());
      if (typeof parsed === "string") throw invalid(`anchor: not a published checkpoint (${parsed})`);
      if (!trusted(parsed)) throw invalid("anchor: not signed by a trusted key");
      anchor = parsed;
    });
    const counts = { entries: 0, checkpoints: 0, unsealed: 0 };
    // The live check reads the primary this instance writes to (synchronously, before the snapshot's
    // first query); the walk below may read a replica, where the newest entries of a live chain may not
    // have arrived yet (source.lagSeconds): the chain then simply ends earlier, which the walk accepts.
    const [liveFound, { value: first, source }] = await Promise.all([verifyLive(), readStore((s, src) => s.snapshot(async (store) => {
      counts.entries = counts.checkpoints = counts.unsealed = 0; // (a read that fell back to the primary starts over)
      // A lagging replica has not yet received the checkpoints that sealed its newest entries: the
      // grace window for unsealed entries grows by the replica's lag.
      const cutoff = new Date(now().getTime() - deps.unsealedGraceMs - (src.replica ? Math.ceil(src.lagSeconds * 1000) : 0));
      const found: (Finding | undefined)[] = [];
      for (const span of await store.chains(req)) {
        // A ranged walk stops at the last entry in range; otherwise it runs to the end of the chain.
        const upTo = req.until ? span.hi : undefined;
        if (req.since && span.lo === undefined) continue; // only checkpoints fall in the range
        found.push(await verifyChain(store, span, !req.since, upTo, counts, cutoff));
      }
      if (!req.since && !req.until) found.push(await verifyNumbering(store));
      if (anchor) {
        found.push(await verifyAnchor(store, anchor));
        // A ranged walk may not reach the anchored chain's start: walk it from genesis to the anchor.
        if (req.since || req.until) {
          const scratch = { entries: 0, checkpoints: 0, unsealed: 0 };
          found.push(await verifyChain(store, { chainId: anchor.chainId }, true, anchor.size, scratch, new Date(0)));
        }
      }
      return earliest(...found);
    }))]);
    const served = { servedByReplica: source.replica, replicaLagSeconds: source.lagSeconds };
    const broken = earliest(first, liveFound);
    const result: VerifyResult = broken
      ? { ok: false, entriesChecked: counts.entries, checkpointsChecked: counts.checkpoints, firstBrokenSequence: broken.seq, problem: broken.problem, detail: broken.detail, unsealedEntries: counts.unsealed, ...served }
      : { ok: true, entriesChecked: counts.entries, checkpointsChecked: counts.checkpoints, firstBrokenSequence: 0, problem: "", detail: "", unsealedEntries: counts.unsealed, ...served };
    const range = JSON.stringify(Object.fromEntries(Object.entries({ since: req.since, until: req.until }).filter(([, v]) => v)));
    const anchored = anchor ? ` anchor=${anchor.keyId}#${anchor.number}` : "";
    await deps.commits.append([
      draft(ctx, "log_verify", {
        outcome: result.ok ? "ok" : "broken",
        detail: result.ok
          ? `range=${range}${anchored} entries=${result.entriesChecked} checkpoints=${result.checkpointsChecked} unsealed=${result.unsealedEntries}`
          : `range=${range}${anchored} first_broken_sequence=${result.firstBrokenSequence} problem=${result.problem}`,
      }),
    ]);
    return result;
  }

  return { query, verify };
}

export type Audit = ReturnType<typeof createAudit>;
