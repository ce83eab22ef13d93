import { sodium } from "./sodium";

/**
 * Keyed MACs over the metadata columns the vault acts on without decrypting: a token row's
 * category, fingerprint, masked view, times and KEK version, and a KEK version's state. The key is
 * a deployment secret wrapped by the root key (like the fingerprint master key), so a database
 * writer cannot produce a valid MAC.
 */
const MAC_BYTES = 32;
const utf8 = new TextEncoder();

export interface TokenMetadata {
  readonly id: string;
  readonly category: string;
  readonly kekVersion: number;
  readonly fingerprint: Uint8Array | null;
  readonly masked: object;
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
}

/** JSON with object keys sorted at every level (jsonb reorders keys; the MAC must not care). */
function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stable((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

function mac(key: Uint8Array, label: string, parts: unknown[]): Uint8Array {
  return sodium.crypto_generichash(MAC_BYTES, utf8.encode(stable([label, ...parts])), key);
}

function same(a: Uint8Array, b: Uint8Array | null | undefined): boolean {
  return !!b && a.length === b.length && sodium.memcmp(a, Uint8Array.from(b));
}

/**
 * The same text `mac()` would build from `["token.v1", id, category, kekVersion, fingerprint hex,
 * masked, createdAt ms, expiresAt ms]`, written directly: only `masked` needs the sorted-key walk
 * (stored rows carry MACs over these exact bytes; test/unit/crypto.test.ts checks the equivalence).
 */
export function tokenMetadataMac(key: Uint8Array, m: TokenMetadata): Uint8Array {
  const fp = m.fingerprint ? `"${hex(m.fingerprint)}"` : "null";
  const text =
    `["token.v1",${JSON.stringify(m.id)},${JSON.stringify(m.category)},${stable(m.kekVersion)},${fp},` +
    `${maskedText(m.masked)},${stable(m.createdAt.getTime())},${m.expiresAt ? stable(m.expiresAt.getTime()) : "null"}]`;
  return sodium.crypto_generichash(MAC_BYTES, Buffer.from(text, "utf8"), key);
}

/** `stable(masked)`; a view of exactly the four known fields is written without sorting keys. */
function maskedText(v: object): string {
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (
    keys.length === 4 &&
    typeof o.brand === "string" &&
    typeof o.display === "string" &&
    typeof o.expired === "boolean" &&
    typeof o.last === "string"
  ) {
    return `{"brand":${JSON.stringify(o.brand)},"display":${JSON.stringify(o.display)},"expired":${o.expired},"last":${JSON.stringify(o.last)}}`;
  }
  return stable(v);
}

const hex = (u: Uint8Array) => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)).toString("hex");


export function verifyTokenMetadata(key: Uint8Array, m: TokenMetadata, tag: Uint8Array | null | undefined): boolean {
  return same(tokenMetadataMac(key, m), tag);
}

export interface KekStateMetadata {
  readonly category: string;
  readonly version: number;
  readonly state: string;
}

export function kekStateMac(key: Uint8Array, m: KekStateMetadata): Uint8Array {
  return mac(key, "kek-state.v1", [m.category, m.version, m.state]);
}

export function verifyKekState(key: Uint8Array, m: KekStateMetadata, tag: Uint8Array | null | undefined): boolean {
  return same(kekStateMac(key, m), tag);
}
