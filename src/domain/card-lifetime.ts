/**
 * A card's lifetime follows its expiry (DESIGN §13): when one Tokenize call carries a card_number
 * and a card_expiry and no ttl_seconds, both tokens expire at the end of the expiry month (UTC)
 * plus the retention window (FIELDVAULT_CARD_RETENTION_DAYS, default 90: the refund window).
 *
 * Pairing inside one call: with as many card_number as card_expiry fields, the k-th card_number
 * pairs with the k-th card_expiry (one card per call, or rows of a batch in order, as the import
 * tool sends them). With unequal counts no pairing is certain, so every card_number and
 * card_expiry of the call gets the latest of the call's lifetimes: nothing is purged before any
 * card it may belong to has expired. Pure.
 */

const DAY_MS = 24 * 3600 * 1000;

/** The instant a normalised `MM/YYYY` expiry ends: 00:00 UTC on the 1st of the following month. */
export function expiryMonthEnd(normalisedExpiry: string): Date | undefined {
  const m = /^(\d{2})\/(\d{4})$/.exec(normalisedExpiry);
  if (!m) return undefined;
  // Date.UTC with the 1-based month as a 0-based index is the first instant of the next month.
  return new Date(Date.UTC(Number(m[2]), Number(m[1]), 1));
}

export function cardLifetime(normalisedExpiry: string, retentionDays: number): Date | undefined {
  const end = expiryMonthEnd(normalisedExpiry);
  return end && new Date(end.getTime() + retentionDays * DAY_MS);
}

/**
 * For each field (category and normalised value), the expiry its card dictates, or undefined
 * where none applies (not a card field, or the call has no card_number or no card_expiry).
 */
export function cardLifetimes(
  fields: readonly { category: string; value: string }[],
  retentionDays: number,
): (Date | undefined)[] {
  const out: (Date | undefined)[] = fields.map(() => undefined);
  const pans = fields.flatMap((f, i) => (f.category === "card_number" ? [i] : []));
  const exps = fields.flatMap((f, i) => (f.category === "card_expiry" ? [i] : []));
  if (pans.length === 0 || exps.length === 0) return out;
  const life = exps.map((i) => cardLifetime(fields[i]!.value, retentionDays));
  if (pans.length === exps.length) {
    pans.forEach((p, k) => {
      out[p] = life[k];
      out[exps[k]!] = life[k];
    });
    return out;
  }
  const latest = life.reduce<Date | undefined>((a, b) => (!a || (b && b > a) ? b : a), undefined);
  for (const i of [...pans, ...exps]) out[i] = latest;
  return out;
}
