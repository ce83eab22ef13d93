import { status } from "@grpc/grpc-js";

/** How the caller names its settings, so an explanation can say which one to change. */
export interface FixVocabulary {
  address: string;
  tls: string;
  ca: string;
  caller: string;
}

export const SDK_WORDS: FixVocabulary = {
  address: "the address option",
  tls: "the tls option ({ ca, cert, key })",
  ca: "tls.ca",
  caller: "the caller option (development, plaintext)",
};

export const CLI_WORDS: FixVocabulary = {
  address: "--address (or FIELDVAULT_ADDRESS)",
  tls: "--cert, --key and --ca (or FIELDVAULT_CLIENT_CERT, FIELDVAULT_CLIENT_KEY, FIELDVAULT_CLIENT_CA)",
  ca: "--ca (or FIELDVAULT_CLIENT_CA)",
  caller: "--caller <identity> (or FIELDVAULT_CALLER)",
};

/**
 * One line a person can act on for a failure to reach the vault or to be recognised by it, in
 * place of grpc-js's "No connection established. Last error: … Resolution note:". Undefined when the
 * failure is something else (the vault's own message is clear then).
 */
export function explainConnectionError(code: number | undefined, details: string, ctx: { address: string; tls: boolean; words: FixVocabulary }): string | undefined {
  const { address, tls, words: w } = ctx;
  if (code === status.UNAUTHENTICATED && /no caller identity/.test(details)) {
    return tls
      ? `the vault at ${address} did not accept your client certificate as an identity; check the certificate given with ${w.tls}`
      : `no identity: over plaintext (a development vault) name yourself with ${w.caller}; a production vault needs a client certificate: ${w.tls}`;
  }
  if (code !== status.UNAVAILABLE) return undefined;
  if (/ECONNREFUSED/.test(details)) return `nothing is listening on ${address} (connection refused): is the vault running (npm start)? Otherwise fix ${w.address}`;
  if (/Name resolution failed|ENOTFOUND|EAI_AGAIN/.test(details)) return `cannot resolve the host of ${address}: check ${w.address}`;
  if (/ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(details)) return `${address} cannot be reached (no route or timed out): check ${w.address} and the network`;
  if (/wrong version number|packet length too long|http request/i.test(details)) {
    return `${address} speaks plaintext, not TLS: it is a development vault; drop ${w.tls} and use ${w.caller}, or point ${w.address} at the TLS vault`;
  }
  if (/self[- ]signed certificate|unable to (get local issuer|verify)|certificate verify failed|UNABLE_TO_VERIFY_LEAF_SIGNATURE/i.test(details)) {
    return `the vault's certificate at ${address} is not signed by the CA you trust: give the CA that signed the vault's server certificate with ${w.ca}`;
  }
  if (/Hostname\/IP does not match|ERR_TLS_CERT_ALTNAME_INVALID|altnames/i.test(details)) {
    return `the vault's certificate does not name the host in ${address}: connect by a name its certificate carries`;
  }
  if (/certificate (has )?expired|CERT_HAS_EXPIRED/i.test(details)) return `a certificate on the connection to ${address} has expired: renew it`;
  if (/Failed to connect|Connection dropped|socket hang up|ECONNRESET/.test(details)) {
    return tls
      ? `${address} closed the TLS handshake: most likely your client certificate is not signed by the CA the vault trusts (its FIELDVAULT_TLS_CA_FILE), or is not a client certificate; check ${w.tls}`
      : `${address} closed the connection before any call: it most likely requires TLS (a production vault); connect with ${w.tls}`;
  }
  return undefined;
}
