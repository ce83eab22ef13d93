/**
 * Tokenize a card and reveal it for payment_authorization. Reads the same settings as the other
 * examples: FIELDVAULT_ADDRESS, and FIELDVAULT_CLIENT_CERT / _KEY / _CA for mutual TLS (otherwise,
 * against a development vault, the self-asserted caller payment-service over plaintext).
 */
import { FieldVaultClient, FieldVaultError, optionsFromEnv } from "../src/sdk";

async function main(): Promise<void> {
  const vault = new FieldVaultClient(optionsFromEnv("payment-service"));
  try {
    const [card] = await vault.tokenize([{ category: "card_number", value: "4111 1111 1111 1111" }]);
    console.log(`token ${card!.token} (${card!.masked.display})`);
    const [value] = await vault.reveal([card!.token], { purpose: "payment_authorization", justification: "quick start" });
    console.log(`value ${value}`);
  } finally {
    vault.close();
  }
}

main().catch((e: unknown) => {
  console.error(`quick-tokenize: FAILED: ${e instanceof FieldVaultError ? `${e.codeName} ${e.explanation ?? e.details}` : (e as Error).message}`);
  process.exit(1);
});
