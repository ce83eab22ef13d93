import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "./config";

export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/**
 * Reads and checks the server's TLS files at start, before any migration runs, so a wrong file is
 * reported by the variable that names it: unreadable, not a PEM certificate or key, or a key that
 * does not belong to the certificate. Messages name files, never their contents.
 */
export function loadTlsMaterial(files: { certFile: string; keyFile: string; caFile: string }): TlsMaterial {
  const problems: string[] = [];
  const read = (variable: string, file: string): Buffer | undefined => {
    try {
      return readFileSync(file);
    } catch (err) {
      problems.push(`${variable}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      return undefined;
    }
  };
  const certificate = (variable: string, file: string, pem: Buffer | undefined): X509Certificate | undefined => {
    if (!pem) return undefined;
    try {
      return new X509Certificate(pem);
    } catch {
      problems.push(`${variable}: ${file} is not a PEM certificate`);
      return undefined;
    }
  };
  const ca = read("FIELDVAULT_TLS_CA_FILE", files.caFile);
  const cert = read("FIELDVAULT_TLS_CERT_FILE", files.certFile);
  const key = read("FIELDVAULT_TLS_KEY_FILE", files.keyFile);
  certificate("FIELDVAULT_TLS_CA_FILE", files.caFile, ca);
  const x509 = certificate("FIELDVAULT_TLS_CERT_FILE", files.certFile, cert);
  let privateKey: KeyObject | undefined;
  if (key) {
    try {
      privateKey = createPrivateKey(key);
    } catch {
      problems.push(`FIELDVAULT_TLS_KEY_FILE: ${files.keyFile} is not a PEM private key (or it is encrypted)`);
    }
  }
  if (x509 && privateKey && !x509.checkPrivateKey(privateKey)) {
    problems.push(`FIELDVAULT_TLS_KEY_FILE: ${files.keyFile} is not the key of the certificate in FIELDVAULT_TLS_CERT_FILE (${files.certFile})`);
  }
  if (x509 && new Date(x509.validTo) < new Date()) problems.push(`FIELDVAULT_TLS_CERT_FILE: ${files.certFile} expired on ${new Date(x509.validTo).toISOString()}`);
  if (problems.length) throw new ConfigError(problems);
  return { ca: ca!, cert: cert!, key: key! };
}
