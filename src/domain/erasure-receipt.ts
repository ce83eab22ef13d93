import { keyIdOf, sign, type SigningKey, verifySignature } from "../crypto/signing";

/** Erasure receipts (DESIGN §14): a canonical JSON statement and an Ed25519 signature over exactly its bytes. */
export const RECEIPT_TYPE = "fieldvault-erasure-receipt-v1";

export interface ErasureStatement {
  type: typeof RECEIPT_TYPE;
  receipt_id: string;
  subject_ref: string;
  time: string;
  /** The policy caller that erased, and the categories its delete right covers (the receipt's scope). */
  erased_by: string;
  categories: string[];
  erased_tokens: string[];
  unlinked_tokens: string[];
  /** The erasure's summary entry in the access log. */
  access_log: { sequence: number; chain_id: string; chain_seq: number; request_id: string };
  key_id: string;
}

export interface Receipt {
  statement: Uint8Array;
  signature: Uint8Array;
  keyId: string;
}

/** JSON with object keys sorted at every level, no whitespace; UTF-8 when encoded. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  if (typeof v === "number" && !Number.isSafeInteger(v)) throw new Error("canonical JSON: only safe integers");
  return JSON.stringify(v);
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder("utf-8", { fatal: true });

export function signReceipt(key: SigningKey, statement: Omit<ErasureStatement, "type" | "key_id">): Receipt {
  const bytes = utf8.encode(canonicalJson({ ...statement, type: RECEIPT_TYPE, key_id: key.keyId }));
  return { statement: bytes, signature: sign(key, bytes), keyId: key.keyId };
}

export type ReceiptCheck = { ok: true; statement: ErasureStatement } | { ok: false; reason: string };

/** Checks a receipt against trusted public keys; the reason says exactly what failed. */
export function verifyReceipt(r: Receipt, trustedKeys: readonly Uint8Array[]): ReceiptCheck {
  if (r.signature.length !== 64) return { ok: false, reason: `signature is ${r.signature.length} bytes, an Ed25519 signature is 64` };
  let statement: ErasureStatement;
  try {
    statement = JSON.parse(utf8d.decode(r.statement)) as ErasureStatement;
  } catch {
    return { ok: false, reason: "statement is not UTF-8 JSON" };
  }
  if (statement === null || typeof statement !== "object" || statement.type !== RECEIPT_TYPE) {
    return { ok: false, reason: `statement is not a ${RECEIPT_TYPE}` };
  }
  if (r.keyId && statement.key_id !== r.keyId) {
    return { ok: false, reason: `key_id ${r.keyId} differs from the key id inside the statement (${String(statement.key_id)})` };
  }
  const keys = trustedKeys.filter((pk) => keyIdOf(pk) === statement.key_id);
  if (keys.length === 0) {
    const known = trustedKeys.map(keyIdOf).join(", ") || "none";
    return { ok: false, reason: `no trusted public key has key id ${String(statement.key_id)} (trusted: ${known})` };
  }
  if (!keys.some((pk) => verifySignature(pk, r.statement, r.signature))) {
    return { ok: false, reason: `signature does not verify over the statement with key ${statement.key_id}: the statement or the signature was changed` };
  }
  return { ok: true, statement };
}
