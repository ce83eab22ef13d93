import { FORMAT_V1 } from "../crypto/aead";
import { valueFormat } from "../crypto/envelope";
import { tokenMetadataMac, verifyTokenMetadata } from "../crypto/metadata-mac";
import type { TokenIntegrity, TokenRecord } from "../storage/ports";

/**
 * MACs over token rows' metadata, keyed by the deployment's metadata secret (root-key wrapped).
 * A row whose value is sealed as v2 must carry a valid MAC; a legacy v1 row without one is
 * accepted as it always was (counted) until rewrap upgrades it. A v2 value cannot be made to look
 * like v1: its format byte is authenticated.
 */
export function createTokenIntegrity(deps: {
  key: () => Uint8Array;
  onFailure: (token: string) => void;
  onLegacy?: () => void;
}): TokenIntegrity {
  return {
    mac: (r) => tokenMetadataMac(deps.key(), r),
    intact(r: TokenRecord): boolean {
      if (!r.metaMac && valueFormat(r) === FORMAT_V1) {
        deps.onLegacy?.();
        return true;
      }
      const ok = verifyTokenMetadata(deps.key(), r, r.metaMac);
      if (!ok) deps.onFailure(r.id);
      return ok;
    },
  };
}
