import { withLuhn } from "./luhn";

/** Known plaintexts, one per category, distinctive enough that finding one anywhere is a leak. */
const nextYear = new Date().getUTCFullYear() + 1;

const PAN = withLuhn("491761928374650");

export interface Planted {
  category: string;
  value: string;
  /** What the vault stores and returns (after normalisation). */
  normal: string;
  caller: string;
  purpose: string;
}

export const PLANTED: readonly Planted[] = [
  { category: "card_number", value: `${PAN.slice(0, 4)} ${PAN.slice(4, 8)} ${PAN.slice(8, 12)} ${PAN.slice(12)}`, normal: PAN, caller: "payment-service", purpose: "payment_authorization" },
  { category: "card_expiry", value: `11/${String(nextYear).slice(2)}`, normal: `11/${nextYear}`, caller: "payment-service", purpose: "refund" },
  { category: "card_cvv", value: "9381", normal: "9381", caller: "payment-service", purpose: "payment_authorization" },
  { category: "cardholder_name", value: "Quillon Plantedname", normal: "Quillon Plantedname", caller: "payment-service", purpose: "payment_authorization" },
  { category: "passport_number", value: "qz 9081726", normal: "QZ9081726", caller: "booking-service", purpose: "airline_manifest" },
  { category: "identity_document", value: "IDDOC-PLANTED-5521", normal: "IDDOC-PLANTED-5521", caller: "booking-service", purpose: "customs_declaration" },
  { category: "date_of_birth", value: "1963-09-27", normal: "1963-09-27", caller: "booking-service", purpose: "airline_manifest" },
  { category: "phone", value: "+44 20 7946 0731", normal: "+442079460731", caller: "booking-service", purpose: "booking_fulfillment" },
  { category: "email", value: "Planted.Canary@Example.org", normal: "planted.canary@example.org", caller: "booking-service", purpose: "customer_support" },
  { category: "address", value: "77 Plantedcanary Road, Leeds", normal: "77 Plantedcanary Road, Leeds", caller: "booking-service", purpose: "booking_fulfillment" },
];

/** Every form a planted value could leak in: as sent, normalised, and (for the PAN) without spaces. */
export const PLANTED_STRINGS: readonly string[] = [...new Set(PLANTED.flatMap((p) => [p.value, p.normal]))];

/** The planted strings (and any extra secrets, e.g. tokens) that occur in `text`. */
export function leaksIn(text: string, extra: readonly string[] = []): string[] {
  return [...PLANTED_STRINGS, ...extra].filter((s) => text.includes(s) || text.includes(JSON.stringify(s).slice(1, -1)));
}
