/**
 * The payment service at checkout and at charge time.
 *
 *   npx tsx examples/payment-checkout.ts        # against `npm start` (development, plaintext)
 *
 * With mutual TLS set FIELDVAULT_ADDRESS=localhost:50051 and FIELDVAULT_CLIENT_CERT / _KEY / _CA
 * (e.g. keys-dev/payment-service.pem, .key and keys-dev/ca.pem). Exits non-zero on any failure.
 */
import { FieldVaultClient, FieldVaultError, optionsFromEnv } from "../src/sdk";

/** What an order keeps: tokens and the masked card, never the card itself. */
interface Order {
  id: string;
  card: { number: string; expiry: string; cvv: string; holder: string };
  display: string;
}

function luhnOk(pan: string): boolean {
  let sum = 0;
  [...pan].reverse().forEach((ch, i) => {
    let d = Number(ch);
    if (i % 2 === 1) d *= 2;
    sum += d > 9 ? d - 9 : d;
  });
  return sum % 10 === 0;
}

/** Stand-in for the card network: it needs the real values, and never prints them. */
function authorizeWithAcquirer(card: { pan: string; expiry: string; cvv: string; holder: string }, amountCents: number): string {
  if (!luhnOk(card.pan) || !/^\d{2}\/\d{4}$/.test(card.expiry) || !/^\d{3,4}$/.test(card.cvv) || !card.holder) {
    throw new Error("acquirer declined: malformed card data");
  }
  return `auth_${amountCents}_${Date.now().toString(36)}`;
}

function check(condition: unknown, what: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function checkout(vault: FieldVaultClient, orderId: string): Promise<Order> {
  const year = new Date().getUTCFullYear() + 2;
  // The browser form posts these once; the payment service tokenizes them before storing anything.
  const form = { number: "4242 4242 4242 4242", expiry: `09/${String(year).slice(2)}`, cvv: "123", holder: "Ada Lovelace" };
  const [number, expiry, cvv, holder] = await vault.tokenize(
    [
      { category: "card_number", value: form.number },
      { category: "card_expiry", value: form.expiry },
      { category: "card_cvv", value: form.cvv },
      { category: "cardholder_name", value: form.holder },
    ],
    { subjectRef: `customer-${orderId}`, requestId: `req_checkout_${orderId}` },
  );
  check(number && expiry && cvv && holder, "four tokens");
  check(number.masked.brand === "visa" && number.masked.last === "4242", "masked card shows brand and last 4");
  const display = `${number.masked.brand.toUpperCase()} •••• ${number.masked.last}`;
  console.log(`checkout ${orderId}: card on file ${display}, holder ${holder.masked.display}; CVV token expires ${cvv.expiresAt?.toISOString()}`);

  // The same card tokenized again gives the same token: "is this card already on file?"
  const [again] = await vault.tokenize([{ category: "card_number", value: "4242-4242-4242-4242" }]);
  check(again?.token === number.token, "deterministic card token");
  return { id: orderId, card: { number: number.token, expiry: expiry.token, cvv: cvv.token, holder: holder.token }, display };
}

async function charge(vault: FieldVaultClient, order: Order, amountCents: number): Promise<void> {
  const [pan, expiry, cvv, holder] = await vault.reveal([order.card.number, order.card.expiry, order.card.cvv, order.card.holder], {
    purpose: "payment_authorization",
    justification: `order ${order.id}`,
    requestId: `req_charge_${order.id}`,
  });
  check(pan === "4242424242424242" && cvv === "123" && holder === "Ada Lovelace" && /^09\/\d{4}$/.test(expiry!), "revealed values match checkout");
  const auth = authorizeWithAcquirer({ pan: pan!, expiry: expiry!, cvv: cvv!, holder: holder! }, amountCents);
  console.log(`charged ${order.display} ${(amountCents / 100).toFixed(2)} EUR: ${auth}`);
}

async function main(): Promise<void> {
  const vault = new FieldVaultClient({ ...optionsFromEnv("payment-service"), deadlineMs: 10_000 });
  try {
    const order = await checkout(vault, `ord${Date.now().toString(36)}`);

    // The order page shows the card without revealing it.
    const [info] = await vault.inspect([order.card.number]);
    check(info?.ok && info.masked.last === "4242", "inspect shows the masked card");
    console.log(`order page: ${info.masked.brand} ending ${info.masked.last} (key version ${info.keyVersion})`);

    await charge(vault, order, 12_950);

    // The CVV was single-use: a second charge must ask the customer again.
    const [cvvAgain] = await vault.detokenize([order.card.cvv], { purpose: "payment_authorization", justification: `order ${order.id} retry` });
    check(cvvAgain && !cvvAgain.ok && cvvAgain.code === "NOT_FOUND", "the CVV is gone after one use");
    console.log("second CVV reveal refused: NOT_FOUND (single use)");

    // Marketing may never see a card.
    const [forMarketing] = await vault.detokenize([order.card.number], { purpose: "marketing" });
    check(forMarketing && !forMarketing.ok && forMarketing.code === "PERMISSION_DENIED", "marketing is refused");

    // A refund later: PAN and expiry only.
    const [panForRefund] = await vault.reveal([order.card.number], { purpose: "refund", justification: `refund ${order.id}` });
    check(luhnOk(panForRefund!), "refund has a valid PAN");
    console.log(`refund to ${order.display} prepared`);
    console.log("payment-checkout: OK");
  } finally {
    vault.close();
  }
}

main().catch((err: unknown) => {
  const e = err as Error;
  console.error(`payment-checkout: FAILED: ${e instanceof FieldVaultError ? `${e.codeName} ${e.explanation ?? e.details}` : e.message}`);
  process.exitCode = 1;
});
