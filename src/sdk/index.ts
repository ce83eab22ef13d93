/**
 * fieldvault client SDK for calling services.
 *
 *   const vault = new FieldVaultClient({ address: "vault:50051", tls: { ca, cert, key } });
 *   const [pan] = await vault.tokenize([{ category: "card_number", value: "4242 4242 4242 4242" }]);
 *   const [value] = await vault.reveal([pan.token], { purpose: "payment_authorization", justification: "order-42" });
 */
export { FieldVaultClient, FieldVaultError, RevealError } from "./client";
export type { CallOverrides, FieldInput, FieldVaultOptions, Inspected, Pem, Revealed, Tokenized } from "./client";
export { DEFAULT_RETRY, DETERMINISTIC_CATEGORIES } from "./retry";
export { TokenFormat } from "../gen/fieldvault/v1/token_service";
export type { RetryPolicy } from "./retry";
export { errorDetailsOf } from "./error-details";
export type { ErrorDetails } from "./error-details";

import { FieldVaultClient, type FieldVaultOptions } from "./client";

/**
 * Options from the environment, the way the examples and the CLI read them:
 * FIELDVAULT_ADDRESS, and either FIELDVAULT_CLIENT_CERT / _KEY / _CA (mutual TLS) or, in
 * development, the given caller identity over plaintext.
 */
export function optionsFromEnv(developmentCaller: string, env: NodeJS.ProcessEnv = process.env): FieldVaultOptions {
  const address = env.FIELDVAULT_ADDRESS ?? "127.0.0.1:50051";
  const { FIELDVAULT_CLIENT_CERT: cert, FIELDVAULT_CLIENT_KEY: key, FIELDVAULT_CLIENT_CA: ca } = env;
  if (cert || key || ca) {
    if (!cert || !key || !ca) throw new Error("FIELDVAULT_CLIENT_CERT, FIELDVAULT_CLIENT_KEY and FIELDVAULT_CLIENT_CA must be set together");
    return { address, tls: { ca, cert, key } };
  }
  return { address, caller: env.FIELDVAULT_CALLER ?? developmentCaller };
}

export const connect = (opts: FieldVaultOptions) => new FieldVaultClient(opts);
