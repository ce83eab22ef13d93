import { FORMAT_V2 } from "../crypto/aead";
import { cvvBinding, type Kek, openValue, valueFormat } from "../crypto/envelope";
import type { Queryable } from "../storage/db";
import type { CvvRecord, CvvStore } from "../storage/ports";
import { markCvvsConsumed, pruneCvvMarkers } from "../storage/postgres/cvv-consumed-store";

/** No CVV lives longer than this, counted from the creation time sealed into its AAD. */
export const CVV_MAX_TTL_SECONDS = 3600;

export type CvvOpened =
  | { ok: true; plain: Uint8Array }
  | { ok: false; code: "FAILED_PRECONDITION"; message: string; outcome: "expired" }
  | { ok: false; code: "INTERNAL"; message: string; outcome: "error" };

/**
 * Opens a CVV envelope read from Redis. Its created/expires times are bound into the value's AAD,
 * so an envelope whose times were edited does not open; the one-hour cap is then enforced from
 * those authenticated times (not from Redis's TTL). Envelopes of the legacy format (no bound
 * times) are refused.
 */
export function openCvv(kek: Kek, token: string, r: CvvRecord, now: Date): CvvOpened {
  const opaque = { ok: false as const, code: "INTERNAL" as const, message: "value could not be decrypted", outcome: "error" as const };
  if (valueFormat(r) !== FORMAT_V2) return opaque;
  let plain: Uint8Array;
  try {
    plain = openValue(kek, token, "card_cvv", r, cvvBinding(r.createdAt, r.expiresAt));
  } catch {
    return opaque;
  }
  const created = r.createdAt.getTime();
  const expires = r.expiresAt.getTime();
  const cap = CVV_MAX_TTL_SECONDS * 1000;
  if (expires - created > cap || now.getTime() >= expires || now.getTime() - created >= cap) {
    plain.fill(0);
    return { ok: false, code: "FAILED_PRECONDITION", message: "token has expired", outcome: "expired" };
  }
  return { ok: true, plain };
}

/**
 * Single use of CVVs, without trusting Redis: a reveal inserts the token into `cvv_consumed` in
 * the same transaction as its access-log entry. Only the reveal whose insert succeeds returns the
 * value (a concurrent one, or one replayed from a restored Redis key, finds the marker); the Redis
 * key is removed only after that commit, so a failed commit loses nothing.
 */
export function createCvvSingleUse(deps: { cvv: Pick<CvvStore, "remove"> }) {
  let calls = 0;
  return {
    /** Work for the commit transaction: returns the tokens this call may reveal. */
    consume:
      (tokens: readonly string[]) =>
      async (tx: Queryable): Promise<Set<string>> => {
        const fresh = await markCvvsConsumed(tx, tokens);
        // Markers older than any CVV can live are no longer needed.
        if (calls++ % 64 === 0) await pruneCvvMarkers(tx, 2 * CVV_MAX_TTL_SECONDS);
        return fresh;
      },
    /** After the commit: the envelopes are no longer needed (best effort; the markers hold regardless). */
    discard: async (tokens: readonly string[]): Promise<void> => {
      if (tokens.length) await deps.cvv.remove(tokens).catch(() => 0);
    },
  };
}
