const nextYear = new Date().getUTCFullYear() + 1;

/** One value per category, with a caller allowed to tokenize and reveal it, and a purpose that allows it. */
export const SAMPLES = [
  { category: "card_number", value: "4111 1111 1111 1111", normal: "4111111111111111", caller: "payment-service", purpose: "payment_authorization" },
  { category: "card_expiry", value: `07/${String(nextYear).slice(2)}`, normal: `07/${nextYear}`, caller: "payment-service", purpose: "refund" },
  { category: "card_cvv", value: "737", normal: "737", caller: "payment-service", purpose: "payment_authorization" },
  { category: "cardholder_name", value: "Zoë Reliability", normal: "Zoë Reliability", caller: "payment-service", purpose: "payment_authorization" },
  { category: "passport_number", value: "xk 7654321", normal: "XK7654321", caller: "booking-service", purpose: "airline_manifest" },
  { category: "identity_document", value: "ID-REL-778", normal: "ID-REL-778", caller: "booking-service", purpose: "customs_declaration" },
  { category: "date_of_birth", value: "1987-03-14", normal: "1987-03-14", caller: "booking-service", purpose: "airline_manifest" },
  { category: "phone", value: "+44 20 7946 0958", normal: "+442079460958", caller: "booking-service", purpose: "booking_fulfillment" },
  { category: "email", value: "Rel.Person@Example.com", normal: "rel.person@example.com", caller: "booking-service", purpose: "customer_support" },
  { category: "address", value: "12 Reliability Lane\nLondon", normal: "12 Reliability Lane\nLondon", caller: "booking-service", purpose: "booking_fulfillment" },
] as const;

export const NON_CVV = SAMPLES.filter((s) => s.category !== "card_cvv");
