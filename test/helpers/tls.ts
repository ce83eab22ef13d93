import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ChannelCredentials } from "@grpc/grpc-js";
import { fromRoot } from "../../src/config/paths";

/** The development certificates in keys-dev/ (see keys-dev/README.md). */
export const KEYS_DEV = fromRoot("keys-dev");
export const devFile = (name: string) => path.join(KEYS_DEV, name);

/** Server-side environment for mutual TLS with the development CA. */
export const TLS_ENV = {
  FIELDVAULT_TLS_CERT_FILE: devFile("server.pem"),
  FIELDVAULT_TLS_KEY_FILE: devFile("server.key"),
  FIELDVAULT_TLS_CA_FILE: devFile("ca.pem"),
};

/** Client credentials for a keys-dev client certificate (`payment-service`, `cn-only`, `other-client`, …). */
export function clientCredentials(name: string): ChannelCredentials {
  return ChannelCredentials.createSsl(readFileSync(devFile("ca.pem")), readFileSync(devFile(`${name}.key`)), readFileSync(devFile(`${name}.pem`)));
}

/** TLS that trusts the server but presents no client certificate. */
export const noClientCertificate = () => ChannelCredentials.createSsl(readFileSync(devFile("ca.pem")));

/**
 * A client certificate signed by the development CA for an identity the policy does not know,
 * made with openssl in a temporary directory (removed by `cleanup`).
 */
export function issueClientCertificate(
  name: string,
  opts: { /** The URI SAN (default spiffe://ego/<name>); null: a CN-only certificate. */ uri?: string | null } = {},
): { dir: string; cert: string; key: string; credentials: ChannelCredentials; cleanup(): void } {
  const uri = opts.uri === undefined ? `spiffe://ego/${name}` : opts.uri;
  const dir = mkdtempSync(path.join(tmpdir(), "fv-cert-"));
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.pem`);
  const csr = path.join(dir, `${name}.csr`);
  const ext = path.join(dir, `${name}.ext`);
  execFileSync("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key], { stdio: "ignore" });
  execFileSync("openssl", ["req", "-new", "-key", key, "-subj", `/CN=${name}`, "-out", csr], { stdio: "ignore" });
  writeFileSync(ext, `basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n${uri ? `subjectAltName=URI:${uri}\n` : ""}`);
  execFileSync(
    "openssl",
    ["x509", "-req", "-in", csr, "-CA", devFile("ca.pem"), "-CAkey", devFile("ca.key"), "-set_serial", "7", "-days", "2", "-extfile", ext, "-out", cert],
    { stdio: "ignore" },
  );
  const credentials = ChannelCredentials.createSsl(readFileSync(devFile("ca.pem")), readFileSync(key), readFileSync(cert));
  return { dir, cert, key, credentials, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
