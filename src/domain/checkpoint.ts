import { hash256, sign, type SigningKey, verifySignature } from "../crypto/signing";
import { checkpointMessage } from "./access-log";

/**
 * Signed checkpoints of the access log, format v2, in the spirit of C2SP tlog-checkpoint: a text
 * body naming the origin, the size and head hash of one writer's chain, then extension lines: the
 * checkpoint's number in its signing key's sequence (1, 2, 3… across every chain that key seals),
 * the hash of the key's previous checkpoint, the key, the time, and `closed` when the writer will
 * never append to that chain again. Each checkpoint therefore covers its predecessor: deleting one
 * leaves a gap in the numbering, and anyone holding a later checkpoint can tell which one is gone.
 *
 * Size 0 is the signed "chain opened" record every chain starts with.
 */
export const CHECKPOINT_V2 = 2;
export const ZERO_HASH = new Uint8Array(32);
const utf8 = new TextEncoder();
const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");

export interface CheckpointFields {
  chainId: string;
  /** Entries of the chain this checkpoint covers (its chain_seq); 0 = the chain was opened. */
  size: number;
  /** Hash of the chain's entry at `size` (the genesis hash for 0). */
  head: Uint8Array;
  at: Date;
  /** The writer will append no more entries to this chain. */
  closed: boolean;
  keyId: string;
  /** Position in the signing key's sequence of checkpoints, from 1. */
  number: number;
  /** checkpointHash of the key's checkpoint number-1 (zeros for number 1). */
  prev: Uint8Array;
}

export interface SignedCheckpointV2 extends CheckpointFields {
  signature: Uint8Array;
}

export const origin = (chainId: string) => `fieldvault.access-log/${chainId}`;

/** The signed body: one field a line, UTF-8, "\n" after each line. */
export function checkpointBody(c: CheckpointFields): string {
  const lines = [
    origin(c.chainId),
    String(c.size),
    b64(c.head),
    `fieldvault-checkpoint v${CHECKPOINT_V2}`,
    `number ${c.number}`,
    `prev ${b64(c.prev)}`,
    `key ${c.keyId}`,
    `time ${c.at.toISOString()}`,
  ];
  if (c.closed) lines.push("closed");
  return lines.join("\n") + "\n";
}

/** What the next checkpoint of the same key covers. */
export function checkpointHash(c: CheckpointFields): Uint8Array {
  return hash256(utf8.encode(checkpointBody(c)));
}

export function signCheckpoint(key: SigningKey, c: Omit<CheckpointFields, "keyId">): SignedCheckpointV2 {
  const fields = { ...c, keyId: key.keyId };
  return { ...fields, signature: sign(key, utf8.encode(checkpointBody(fields))) };
}

export function checkpointSignedBy(publicKey: Uint8Array, c: SignedCheckpointV2): boolean {
  return verifySignature(publicKey, utf8.encode(checkpointBody(c)), c.signature);
}

/** A stored checkpoint of either format (v1 rows predate migration 10: no number, no predecessor). */
export type AnyCheckpoint =
  | ({ version: 1; chainId: string; size: number; head: Uint8Array; at: Date; keyId: string; signature: Uint8Array })
  | ({ version: 2 } & SignedCheckpointV2);

/** Whether one of the trusted keys signed this checkpoint (v1: the legacy message; v2: the body). */
export function signedByTrusted(trusted: readonly Uint8Array[], c: AnyCheckpoint): boolean {
  if (c.version === 1) return trusted.some((pk) => verifySignature(pk, checkpointMessage(c.chainId, c.size, c.head, c.at), c.signature));
  return trusted.some((pk) => checkpointSignedBy(pk, c));
}

/** The note form (body, blank line, signature line), as C2SP signed notes print it. */
export function checkpointNote(c: SignedCheckpointV2): string {
  return `${checkpointBody(c)}\n\u2014 ${c.keyId} ${b64(c.signature)}\n`;
}

/**
 * The JSON line published outside the database (log stream, anchor file). Self-contained: a
 * verifier rebuilds the body from these fields and checks the signature with a trusted key.
 */
export function checkpointJson(c: SignedCheckpointV2) {
  return {
    v: CHECKPOINT_V2,
    origin: origin(c.chainId),
    chain_id: c.chainId,
    size: c.size,
    head: b64(c.head),
    number: c.number,
    prev: b64(c.prev),
    key_id: c.keyId,
    time: c.at.toISOString(),
    closed: c.closed,
    hash: b64(checkpointHash(c)),
    signature: b64(c.signature),
  };
}

const B64_32 = /^[A-Za-z0-9+/]{43}=$/;
const B64_64 = /^[A-Za-z0-9+/]{86}==$/;

/**
 * Parses one published checkpoint: either the checkpoint object itself (an anchor-file line) or a
 * log line that carries it under `checkpoint` (msg "audit checkpoint"). Returns a reason when the
 * line is not one; never echoes the input.
 */
export function parseCheckpointJson(line: string): SignedCheckpointV2 | string {
  let o: unknown;
  try {
    o = JSON.parse(line);
  } catch {
    return "not JSON";
  }
  if (o && typeof o === "object" && "checkpoint" in o) o = (o as { checkpoint: unknown }).checkpoint;
  const j = o as Record<string, unknown> | null;
  if (!j || typeof j !== "object") return "not a checkpoint object";
  if (j.v !== CHECKPOINT_V2) return `not a v${CHECKPOINT_V2} checkpoint`;
  const str = (k: string) => (typeof j[k] === "string" ? (j[k] as string) : undefined);
  const int = (k: string) => (Number.isSafeInteger(j[k]) && (j[k] as number) >= 0 ? (j[k] as number) : undefined);
  const chainId = str("chain_id");
  const keyId = str("key_id");
  const head = str("head");
  const prev = str("prev");
  const sig = str("signature");
  const time = str("time");
  const size = int("size");
  const number = int("number");
  if (!chainId || chainId.length > 200 || /[\s\u0000-\u001f]/.test(chainId)) return "chain_id missing or malformed";
  if (!keyId || !/^[A-Za-z0-9_]{1,64}$/.test(keyId)) return "key_id missing or malformed";
  if (size === undefined) return "size missing";
  if (number === undefined || number < 1) return "number missing";
  if (!head || !B64_32.test(head)) return "head is not a base64 32-byte hash";
  if (!prev || !B64_32.test(prev)) return "prev is not a base64 32-byte hash";
  if (!sig || !B64_64.test(sig)) return "signature is not a base64 Ed25519 signature";
  const at = time ? new Date(time) : undefined;
  if (!at || Number.isNaN(at.getTime()) || at.toISOString() !== time) return "time is not an ISO 8601 UTC time";
  if (j.closed !== undefined && typeof j.closed !== "boolean") return "closed is not a boolean";
  return {
    chainId,
    size,
    head: new Uint8Array(Buffer.from(head, "base64")),
    at,
    closed: j.closed === true,
    keyId,
    number,
    prev: new Uint8Array(Buffer.from(prev, "base64")),
    signature: new Uint8Array(Buffer.from(sig, "base64")),
  };
}

/** What a running writer knows about its own chains, for Verify to compare with the database. */
export interface LiveChain {
  chainId: string;
  /** Last position known committed, and its hash (0 / genesis: nothing yet). */
  committedSeq: number;
  committedHead: Uint8Array;
  /** Highest position this writer has chained (committed or in flight): anything beyond is someone else's. */
  chainedSeq: number;
  /** A chain left after a failed flush: the entries that flush tried to write after committedSeq. */
  attempted?: { chainSeq: number; hash: Uint8Array }[];
}

export interface LiveLogState {
  chains: LiveChain[];
  /** The newest checkpoint of the signing key this writer knows committed. */
  checkpoint?: SignedCheckpointV2;
}

/**
 * Checks published checkpoints against each other (an anchor file): per key, one checkpoint per
 * number, and each one covering the one numbered before it when both are present. Two different
 * checkpoints with one number mean the sequence was forked — the database lost checkpoints and a
 * writer continued from what was left. Returns the first problem, or undefined.
 */
export function publishedForkProblem(cps: readonly SignedCheckpointV2[]): string | undefined {
  const byKey = new Map<string, Map<number, Uint8Array>>();
  for (const cp of cps) {
    const seen = byKey.get(cp.keyId) ?? new Map<number, Uint8Array>();
    byKey.set(cp.keyId, seen);
    const h = checkpointHash(cp);
    const other = seen.get(cp.number);
    if (other && !Buffer.from(other).equals(Buffer.from(h))) return `two different checkpoints numbered ${cp.number} for key ${cp.keyId}: the sequence was forked`;
    seen.set(cp.number, h);
  }
  for (const cp of cps) {
    const before = byKey.get(cp.keyId)!.get(cp.number - 1);
    if (before && !Buffer.from(before).equals(Buffer.from(cp.prev))) return `checkpoint ${cp.number} of key ${cp.keyId} does not cover checkpoint ${cp.number - 1}: the sequence was forked`;
  }
  return undefined;
}
