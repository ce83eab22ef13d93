/**
 * `npm run bench -- --tls`: every gRPC hop over mutual TLS, as in production (DESIGN §6), with the
 * development certificates in keys-dev/. The vault, the no-op floor and every client (load
 * generator, seeding) read the same switch, FIELDVAULT_BENCH_TLS=1, so the floor stays like for like.
 */
import { readFileSync } from "node:fs";
import { ChannelCredentials, ServerCredentials } from "@grpc/grpc-js";
import { fromRoot } from "../../src/config/paths";

// From the package root: the no-op server runs bundled from bench/results/.build/.
const file = (f: string) => fromRoot("keys-dev", f);

export const benchTls = (): boolean => process.env.FIELDVAULT_BENCH_TLS === "1";

/** The vault's TLS settings (server certificate, and the CA its callers' certificates chain to). */
export const VAULT_TLS_ENV = {
  FIELDVAULT_TLS_CERT_FILE: file("server.pem"),
  FIELDVAULT_TLS_KEY_FILE: file("server.key"),
  FIELDVAULT_TLS_CA_FILE: file("ca.pem"),
};

/** What a bench client connects with: payment-service's certificate under --tls, else plaintext. */
export function benchClientCredentials(): ChannelCredentials {
  if (!benchTls()) return ChannelCredentials.createInsecure();
  return ChannelCredentials.createSsl(readFileSync(file("ca.pem")), readFileSync(file("payment-service.key")), readFileSync(file("payment-service.pem")));
}

/** What the no-op floor listens with: the vault's certificate and client-certificate check under --tls. */
export function benchServerCredentials(): ServerCredentials {
  if (!benchTls()) return ServerCredentials.createInsecure();
  return ServerCredentials.createSsl(readFileSync(file("ca.pem")), [{ cert_chain: readFileSync(file("server.pem")), private_key: readFileSync(file("server.key")) }], true);
}
