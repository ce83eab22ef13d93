import { fingerprintBinding, type Kek, rewrapAndUpgrade } from "../crypto/envelope";
import { fingerprint } from "../crypto/fingerprint";
import type { CategoryRegistry, MaskedView } from "../domain/categories";
import { IntegrityError } from "../domain/errors";
import type { TokenIntegrity, TokenRecord } from "../storage/ports";
import type { Keyring } from "./keyring";

const utf8d = new TextDecoder("utf-8", { fatal: true });

/**
 * One row's rewrap: checks its metadata MAC, re-wraps its DEK under `to`, and upgrades a legacy v1
 * value to v2 — binding its fingerprint, which is first recomputed from the plaintext (a legacy
 * row whose fingerprint a database writer moved is refused, not laundered), with its masked view
 * re-derived from the plaintext too. The row gets a fresh MAC. Throws to leave the row as it is.
 */
export function upgradeOnRewrap(
  deps: { registry: Pick<CategoryRegistry, "get">; keyring: Pick<Keyring, "fingerprintKey">; integrity?: TokenIntegrity },
  from: Kek,
  to: Kek,
  row: TokenRecord,
): { id: string; wrappedDek: Uint8Array; ciphertext: Uint8Array; masked: MaskedView; metaMac: Uint8Array | null } {
  if (deps.integrity && !deps.integrity.intact(row)) throw new IntegrityError();
  const spec = deps.registry.get(row.category);
  let masked = row.masked;
  const sealed = rewrapAndUpgrade(from, to, row.id, row.category, row, fingerprintBinding(row.fingerprint), (plain) => {
    if (row.fingerprint) {
      const fp = fingerprint(deps.keyring.fingerprintKey(row.category), plain);
      if (Buffer.compare(Buffer.from(fp), Buffer.from(row.fingerprint)) !== 0) throw new IntegrityError();
    }
    if (spec) masked = spec.mask(utf8d.decode(plain), row.createdAt);
  });
  const metaMac = deps.integrity ? deps.integrity.mac({ ...row, kekVersion: to.version, masked }) : null;
  return { id: row.id, wrappedDek: sealed.wrappedDek, ciphertext: sealed.ciphertext, masked, metaMac };
}
