import { X509Certificate } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { SigningKey } from "../crypto/signing";
import { signingKeyFromSeed } from "../crypto/signing";
import { sodium } from "../crypto/sodium";
import type { Config } from "./config";
import { DEV_SIGNING_KEY_FILE } from "./config";
import { fromRoot } from "./paths";

/**
 * Everything in keys-dev/ is public (it is in git): anyone can mint a client certificate under its
 * CA or sign checkpoints with its key. Production refuses all of it by fingerprint, as it refuses
 * the development root key; the fingerprints are pinned here (a production image ships without
 * keys-dev/) and, where keys-dev/ exists, also computed from its files (so regenerated
 * development certificates are refused too).
 */
const PINNED_CERT_SHA256 = new Set([
  "2f9351615361fd5ace2038a3fa0ae034ed929a6b2ded3509942a7530351b0bed", // ca.pem
  "93db033a866ad84859e1915da5f4577466e5770b7815f5a68ee48b9f369f2951", // server.pem
  "ce539287c96cef93e8c45f886addc35953674e4e9518000103e6cfe3929ccb52", // other-ca.pem
  "a7e4da52a450fe8fc95203face47854bb4decd4a7b0fc8e2c0e72d7367016374", // booking-service.pem
  "164cf34f5252b15c437f9ca1b2c5146b77b24820c1d7436a3fce5e5f50eaac3e", // cn-only.pem
  "5fdc581b702d77035f8e8c9f09c477096049ab2a67e651284d8557d0cbc8dac2", // ir-analyst.pem
  "eb1e44050b5eeafca567aa56512f47d973e7b7a0408ca2bfa7c4072345bda5b5", // other-client.pem
  "5a05a5a36811285cac031a55f591075e4f35ac53938098dc7621a285453bfac0", // payment-service.pem
  "f0ada39edbce023c5a47973b65e150cca187ed98330b432cb528b28359d8c7d7", // sec-admin-1.pem
  "590334a0a554a4bcd4b357ea07c428a9cecb4494ed87adc648506b8436998af0", // sec-admin-2.pem
  "41bae2e90d3009ab11d0764fa5d24e29e3fd19f8d518c7ef9317b99232bf71d7", // support-desk.pem
]);
/** Public half of keys-dev/audit-signing.key. */
const PINNED_SIGNING_PUBLIC_KEYS = new Set(["IlJrrm303Z1WmtaB2S2vsfxTE2uWYrWz7TCItMDgfWA="]);

const KEYS_DEV = fromRoot("keys-dev");

/** SHA-256 fingerprints (hex) of every certificate in a PEM file (a bundle may hold several). */
export function certificateFingerprints(pem: string): string[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  return blocks.map((b) => new X509Certificate(b).fingerprint256.replace(/:/g, "").toLowerCase());
}

function devCertificates(): Set<string> {
  const out = new Set(PINNED_CERT_SHA256);
  if (existsSync(KEYS_DEV)) {
    for (const f of readdirSync(KEYS_DEV).filter((n) => n.endsWith(".pem"))) {
      try {
        for (const fp of certificateFingerprints(readFileSync(path.join(KEYS_DEV, f), "utf8"))) out.add(fp);
      } catch {
        /* not a certificate */
      }
    }
  }
  return out;
}

function devSigningKeys(): Set<string> {
  const out = new Set(PINNED_SIGNING_PUBLIC_KEYS);
  if (existsSync(DEV_SIGNING_KEY_FILE)) {
    try {
      const seed = sodium.from_base64(readFileSync(DEV_SIGNING_KEY_FILE, "utf8").trim(), sodium.base64_variants.ORIGINAL);
      out.add(Buffer.from(signingKeyFromSeed(seed).publicKey).toString("base64"));
    } catch {
      /* unreadable: the pin still holds */
    }
  }
  return out;
}

/** What production must refuse: each development item configured, named by its variable. */
export function developmentMaterialInUse(config: Config, signingKey: SigningKey): string[] {
  const found: string[] = [];
  const signing = devSigningKeys();
  if (signing.has(Buffer.from(signingKey.publicKey).toString("base64"))) found.push("FIELDVAULT_SIGNING_KEY_FILE: the development checkpoint signing key");
  if (config.auditTrustedKeys.some((k) => signing.has(Buffer.from(k).toString("base64")))) {
    found.push("FIELDVAULT_AUDIT_TRUSTED_KEYS: the development checkpoint signing key");
  }
  if (config.tls) {
    const certs = devCertificates();
    const check = (file: string, variable: string, what: string) => {
      let fps: string[] = [];
      try {
        fps = certificateFingerprints(readFileSync(file, "utf8"));
      } catch {
        return; // unreadable: TLS set-up reports it
      }
      if (fps.some((fp) => certs.has(fp))) found.push(`${variable}: ${what}`);
    };
    check(config.tls.caFile, "FIELDVAULT_TLS_CA_FILE", "a development CA (anyone can mint client certificates under it)");
    check(config.tls.certFile, "FIELDVAULT_TLS_CERT_FILE", "a development certificate (its private key is public)");
  }
  return found;
}
