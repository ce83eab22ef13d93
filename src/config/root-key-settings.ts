import { readFileSync } from "node:fs";
import { z } from "zod";

/**
 * The root-key provider's settings (DESIGN §12), in one block so config.ts only spreads them in.
 * FIELDVAULT_ROOT_KEY_FILE, FIELDVAULT_ROOT_KEY and FIELDVAULT_ACTIVE_ROOT_KEY_ID stay in config.ts.
 */
export const ROOT_KEY_PROVIDER_ENV = {
  /** file | env | pkcs11; unset: env when FIELDVAULT_ROOT_KEY is set, else file (the behaviour before providers). */
  FIELDVAULT_ROOT_KEY_PROVIDER: z.enum(["file", "env", "pkcs11"]).optional(),
  FIELDVAULT_PKCS11_LIBRARY: z.string().min(1).optional(),
  FIELDVAULT_PKCS11_TOKEN_LABEL: z.string().min(1).optional(),
  FIELDVAULT_PKCS11_PIN_FILE: z.string().min(1).optional(),
  FIELDVAULT_PKCS11_PIN: z.string().min(1).optional(),
  /** One label, or several comma-separated: the first is active, the others only unwrap. */
  FIELDVAULT_PKCS11_KEY_LABEL: z.string().min(1).optional(),
};

type ProviderEnv = { [K in keyof typeof ROOT_KEY_PROVIDER_ENV]?: string } & {
  FIELDVAULT_ROOT_KEY?: string;
  FIELDVAULT_ROOT_KEY_FILE?: string;
};

export interface Pkcs11Config {
  library: string;
  tokenLabel: string;
  /** Where the PIN is: read when the provider opens, so it never sits in Config. */
  pin: { file: string } | { env: string };
  keyLabels: string[];
}

export interface ProviderConfig {
  provider: "file" | "env" | "pkcs11";
  /** Set whenever FIELDVAULT_PKCS11_LIBRARY is: with another provider its keys only unwrap (migration). */
  pkcs11?: Pkcs11Config;
}

/** Problems of the provider settings (one per variable, never a value) and the parsed settings. */
export function providerConfig(e: ProviderEnv): { problems: string[]; config: ProviderConfig } {
  const problems: string[] = [];
  const provider = (e.FIELDVAULT_ROOT_KEY_PROVIDER as ProviderConfig["provider"] | undefined) ?? (e.FIELDVAULT_ROOT_KEY ? "env" : "file");
  if (provider === "env" && !e.FIELDVAULT_ROOT_KEY) problems.push("FIELDVAULT_ROOT_KEY: required with FIELDVAULT_ROOT_KEY_PROVIDER=env");
  if (provider === "file" && e.FIELDVAULT_ROOT_KEY_PROVIDER && e.FIELDVAULT_ROOT_KEY) {
    problems.push("FIELDVAULT_ROOT_KEY: not used with FIELDVAULT_ROOT_KEY_PROVIDER=file; set FIELDVAULT_ROOT_KEY_FILE");
  }
  const anyPkcs11 = [e.FIELDVAULT_PKCS11_LIBRARY, e.FIELDVAULT_PKCS11_TOKEN_LABEL, e.FIELDVAULT_PKCS11_KEY_LABEL, e.FIELDVAULT_PKCS11_PIN, e.FIELDVAULT_PKCS11_PIN_FILE].some(Boolean);
  let pkcs11: Pkcs11Config | undefined;
  if (provider === "pkcs11" || anyPkcs11) {
    const why = provider === "pkcs11" ? "required with FIELDVAULT_ROOT_KEY_PROVIDER=pkcs11" : "required with the other FIELDVAULT_PKCS11_* settings";
    if (!e.FIELDVAULT_PKCS11_LIBRARY) problems.push(`FIELDVAULT_PKCS11_LIBRARY: ${why} (path of the vendor's PKCS#11 module)`);
    if (!e.FIELDVAULT_PKCS11_TOKEN_LABEL) problems.push(`FIELDVAULT_PKCS11_TOKEN_LABEL: ${why}`);
    if (!e.FIELDVAULT_PKCS11_KEY_LABEL) problems.push(`FIELDVAULT_PKCS11_KEY_LABEL: ${why}`);
    if (!e.FIELDVAULT_PKCS11_PIN && !e.FIELDVAULT_PKCS11_PIN_FILE) problems.push(`FIELDVAULT_PKCS11_PIN_FILE or FIELDVAULT_PKCS11_PIN: ${why}`);
    if (e.FIELDVAULT_PKCS11_PIN && e.FIELDVAULT_PKCS11_PIN_FILE) problems.push("FIELDVAULT_PKCS11_PIN and FIELDVAULT_PKCS11_PIN_FILE are mutually exclusive");
    const keyLabels = (e.FIELDVAULT_PKCS11_KEY_LABEL ?? "").split(",").map((l) => l.trim());
    if (e.FIELDVAULT_PKCS11_KEY_LABEL && keyLabels.some((l) => !l)) problems.push("FIELDVAULT_PKCS11_KEY_LABEL: an empty label in the list");
    if (new Set(keyLabels).size !== keyLabels.length) problems.push("FIELDVAULT_PKCS11_KEY_LABEL: a label is listed twice");
    if (!problems.some((p) => p.startsWith("FIELDVAULT_PKCS11"))) {
      pkcs11 = {
        library: e.FIELDVAULT_PKCS11_LIBRARY!,
        tokenLabel: e.FIELDVAULT_PKCS11_TOKEN_LABEL!,
        pin: e.FIELDVAULT_PKCS11_PIN_FILE ? { file: e.FIELDVAULT_PKCS11_PIN_FILE } : { env: e.FIELDVAULT_PKCS11_PIN! },
        keyLabels,
      };
    }
  }
  return { problems, config: { provider, pkcs11 } };
}

/** The PIN, read only when the token is opened. Errors name the setting, never the PIN. */
export function readPin(pin: Pkcs11Config["pin"]): string {
  if ("env" in pin) return pin.env;
  let text: string;
  try {
    text = readFileSync(pin.file, "utf8");
  } catch {
    throw new Error(`FIELDVAULT_PKCS11_PIN_FILE: cannot read ${pin.file}`);
  }
  const value = text.replace(/\r?\n$/, "");
  if (!value) throw new Error(`FIELDVAULT_PKCS11_PIN_FILE: ${pin.file} is empty`);
  return value;
}

/** The environment variable behind each PKCS#11 setting, for start-up errors. */
export const PKCS11_SETTING_VARIABLE = {
  library: "FIELDVAULT_PKCS11_LIBRARY",
  tokenLabel: "FIELDVAULT_PKCS11_TOKEN_LABEL",
  pin: "FIELDVAULT_PKCS11_PIN_FILE / FIELDVAULT_PKCS11_PIN",
  keyLabel: "FIELDVAULT_PKCS11_KEY_LABEL",
} as const;
