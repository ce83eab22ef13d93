import { hash256Text } from "../crypto/signing";

/** How the caller proved who it is. */
export type AuthMethod = "mtls" | "self_asserted" | "internal";

/** One access-log entry before it joins a chain. Never holds a value. */
export interface LogDraft {
  at: Date;
  caller: string;
  auth: AuthMethod;
  peer: string;
  action: string;
  category: string;
  token: string;
  purpose: string;
  justification: string;
  outcome: string;
  requestId: string;
  instanceId: string;
  detail: string;
}

export interface ChainedEntry extends LogDraft {
  chainId: string;
  chainSeq: number;
  prevHash: Uint8Array;
  hash: Uint8Array;
}

export const GENESIS_HASH = new Uint8Array(32);
const utf8 = new TextEncoder();

/** The canonical text an entry's hash covers: every field, in a fixed order, as a JSON array. */
function canonicalText(e: Omit<ChainedEntry, "prevHash" | "hash">): string {
  return JSON.stringify([
    e.chainId,
    e.chainSeq,
    e.at.toISOString(),
    e.caller,
    e.auth,
    e.peer,
    e.action,
    e.category,
    e.token,
    e.purpose,
    e.justification,
    e.outcome,
    e.requestId,
    e.instanceId,
    e.detail,
  ]);
}

/** hash = BLAKE2b-256(prev_hash ‖ UTF-8(canonicalText(entry))). */
export function entryHash(prevHash: Uint8Array, e: Omit<ChainedEntry, "prevHash" | "hash">): Uint8Array {
  return hash256Text(prevHash, canonicalText(e));
}

/** The entry joined to a chain: one object, built once (spreading drafts showed in the profile). */
export function chain(d: LogDraft, chainId: string, chainSeq: number, prevHash: Uint8Array): ChainedEntry {
  const e: ChainedEntry = {
    at: d.at,
    caller: d.caller,
    auth: d.auth,
    peer: d.peer,
    action: d.action,
    category: d.category,
    token: d.token,
    purpose: d.purpose,
    justification: d.justification,
    outcome: d.outcome,
    requestId: d.requestId,
    instanceId: d.instanceId,
    detail: d.detail,
    chainId,
    chainSeq,
    prevHash,
    hash: GENESIS_HASH,
  };
  e.hash = entryHash(prevHash, e);
  return e;
}

/** What a checkpoint signs: the chain, the sequence it seals, that entry's hash, and when. */
export function checkpointMessage(chainId: string, chainSeq: number, hash: Uint8Array, at: Date): Uint8Array {
  return utf8.encode(
    JSON.stringify(["fieldvault-checkpoint-v1", chainId, chainSeq, Buffer.from(hash).toString("hex"), at.toISOString()]),
  );
}

export interface Checkpoint {
  chainId: string;
  chainSeq: number;
  hash: Uint8Array;
  at: Date;
  keyId: string;
  signature: Uint8Array;
}

/** The entry for one call: the caller's context, the action, and only the fields that apply. */
export function logDraft(
  ctx: { identity: string; auth: AuthMethod; peer: string; requestId: string },
  instanceId: string,
  at: Date,
  action: string,
  fields: Partial<LogDraft> = {},
): LogDraft {
  return {
    at,
    caller: ctx.identity,
    auth: ctx.auth,
    peer: ctx.peer,
    action,
    category: "",
    token: "",
    purpose: "",
    justification: "",
    outcome: "ok",
    requestId: ctx.requestId,
    instanceId,
    detail: "",
    ...fields,
  };
}
