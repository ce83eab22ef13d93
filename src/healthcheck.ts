/**
 * `node dist/src/healthcheck.js [service]` — a grpc_health_probe for the container HEALTHCHECK.
 * Calls grpc.health.v1.Health/Check on the local vault and exits 0 only for SERVING.
 *
 * Address: FIELDVAULT_HEALTHCHECK_ADDRESS, else FIELDVAULT_LISTEN with a wildcard host replaced by
 * 127.0.0.1. With FIELDVAULT_TLS_CA_FILE set (the vault's own variable, so the probe run in the vault's
 * environment knows TLS is on) it speaks TLS, trusts FIELDVAULT_HEALTHCHECK_CA_FILE — by default that
 * same CA, which then must also have signed the server's certificate — and presents the client
 * certificate in FIELDVAULT_HEALTHCHECK_CERT_FILE / FIELDVAULT_HEALTHCHECK_KEY_FILE (the vault requires one).
 */
import { readFileSync } from "node:fs";
import { ChannelCredentials, type Client, makeClientConstructor, type ServiceError } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

function address(env: NodeJS.ProcessEnv): string {
  if (env.FIELDVAULT_HEALTHCHECK_ADDRESS) return env.FIELDVAULT_HEALTHCHECK_ADDRESS;
  const listen = env.FIELDVAULT_LISTEN ?? "127.0.0.1:50051";
  const at = listen.lastIndexOf(":");
  const host = listen.slice(0, at);
  // The local vault; by name under TLS, so the certificate's DNS name matches (SNI takes no IPs).
  const local = env.FIELDVAULT_TLS_CA_FILE ? "localhost" : "127.0.0.1";
  return `${["0.0.0.0", "[::]", "::", "", "127.0.0.1"].includes(host) ? local : host}:${listen.slice(at + 1)}`;
}

function credentials(env: NodeJS.ProcessEnv): ChannelCredentials {
  if (!env.FIELDVAULT_TLS_CA_FILE) return ChannelCredentials.createInsecure();
  const cert = env.FIELDVAULT_HEALTHCHECK_CERT_FILE;
  const key = env.FIELDVAULT_HEALTHCHECK_KEY_FILE;
  const ca = env.FIELDVAULT_HEALTHCHECK_CA_FILE ?? env.FIELDVAULT_TLS_CA_FILE;
  return ChannelCredentials.createSsl(readFileSync(ca), key ? readFileSync(key) : null, cert ? readFileSync(cert) : null);
}

const HealthClient = makeClientConstructor(healthService, "grpc.health.v1.Health");

export function check(service = "", env: NodeJS.ProcessEnv = process.env, timeoutMs = 3000): Promise<string> {
  const client = new HealthClient(address(env), credentials(env)) as unknown as Client & {
    Check(req: { service: string }, opts: { deadline: number }, cb: (err: ServiceError | null, res: { status: string }) => void): void;
  };
  return new Promise<string>((resolve, reject) =>
    client.Check({ service }, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res.status))),
  ).finally(() => client.close());
}

if (require.main === module) {
  const service = process.argv[2] ?? "";
  check(service).then(
    (s) => {
      process.stdout.write(`status: ${s}\n`);
      process.exit(s === "SERVING" ? 0 : 1);
    },
    (err: ServiceError) => {
      process.stderr.write(`healthcheck: ${err.details ?? err.message}\n`);
      process.exit(1);
    },
  );
}
