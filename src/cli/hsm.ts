import type { Command } from "commander";
import { providerConfig, readPin } from "../config/root-key-settings";
import { createPkcs11Key, type Pkcs11Settings, Pkcs11SetupError, pkcs11Status } from "../crypto/pkcs11-root-key";
import { readySodium } from "../crypto/sodium";

const out = (line = "") => process.stdout.write(line + "\n");

/** The same FIELDVAULT_PKCS11_* settings the vault reads (DESIGN §12); problems name the variable, never the PIN. */
function settings(env: NodeJS.ProcessEnv, keyLabel?: string): Pkcs11Settings {
  const { problems, config } = providerConfig({
    ...env,
    FIELDVAULT_ROOT_KEY_PROVIDER: "pkcs11",
    ...(keyLabel !== undefined ? { FIELDVAULT_PKCS11_KEY_LABEL: keyLabel } : {}),
  });
  const mine = problems.filter((p) => p.startsWith("FIELDVAULT_PKCS11"));
  if (mine.length || !config.pkcs11) throw new Error(mine.join("\n  ") || "FIELDVAULT_PKCS11_*: not configured");
  const p = config.pkcs11;
  return { library: p.library, tokenLabel: p.tokenLabel, pin: readPin(p.pin), keyLabels: p.keyLabels };
}

const variableOf = (err: Pkcs11SetupError, env: NodeJS.ProcessEnv) =>
  ({
    library: "FIELDVAULT_PKCS11_LIBRARY",
    tokenLabel: "FIELDVAULT_PKCS11_TOKEN_LABEL",
    pin: env.FIELDVAULT_PKCS11_PIN_FILE ? "FIELDVAULT_PKCS11_PIN_FILE" : "FIELDVAULT_PKCS11_PIN",
    keyLabel: "--label",
  })[err.setting];

/** `fieldvault hsm …`: offline commands on the PKCS#11 token the vault would use. */
export function registerHsm(program: Command): void {
  const hsm = program
    .command("hsm")
    .description("the PKCS#11 root key (FIELDVAULT_PKCS11_LIBRARY, _TOKEN_LABEL, _PIN_FILE or _PIN, _KEY_LABEL)");

  hsm
    .command("create-key")
    .requiredOption("--label <label>", "label of the new key object")
    .description("generate an AES-256 root key inside the token: sensitive, not extractable, never leaves the module")
    .action(async (o: { label: string }) => {
      await readySodium();
      const s = settings(process.env, o.label);
      try {
        const { id, token } = await createPkcs11Key(s, o.label);
        out(`created AES-256 key "${o.label}" in token "${token.label}" (serial ${token.serial}): sensitive, not extractable`);
        out(`root key id ${id}`);
      } catch (err) {
        if (err instanceof Pkcs11SetupError) throw new Error(`${variableOf(err, process.env)}: ${err.message}`);
        throw err;
      }
    });

  hsm
    .command("status")
    .option("--json", "machine-readable output")
    .description("which module, token and key labels the vault would use, whether login works and which key is active")
    .action(async (o: { json?: boolean }) => {
      await readySodium();
      const s = settings(process.env);
      const st = await pkcs11Status(s);
      const ok = st.library.ok && !!st.token && !!st.login?.ok && st.keys.length > 0 && st.keys.every((k) => !!k.id);
      if (o.json) {
        out(JSON.stringify({ ok, ...st }, null, 2));
      } else {
        const lib = st.library;
        out(`module  ${lib.path}: ${lib.ok ? `ok (${lib.description}, ${lib.manufacturer}, Cryptoki ${lib.cryptoki})` : `FAILED: FIELDVAULT_PKCS11_LIBRARY: ${lib.problem}`}`);
        if (lib.ok) {
          out(
            st.token
              ? `token   "${st.token.label}": ok (serial ${st.token.serial}, ${st.token.model}, ${st.token.manufacturer})`
              : `token   FAILED: FIELDVAULT_PKCS11_TOKEN_LABEL: ${st.tokenProblem}`,
          );
        }
        if (st.login) out(`login   ${st.login.ok ? "ok" : `FAILED: ${process.env.FIELDVAULT_PKCS11_PIN_FILE ? "FIELDVAULT_PKCS11_PIN_FILE" : "FIELDVAULT_PKCS11_PIN"}: ${st.login.problem}`}`);
        for (const k of st.keys) {
          const role = k.active ? "active" : "unwrap only";
          if (k.id) out(`key     "${k.label}" ${role}: ok, ${k.id} (AES-256, sensitive, not extractable)`);
          else out(`key     "${k.label}" ${role}: FAILED: FIELDVAULT_PKCS11_KEY_LABEL: ${k.problem}`);
        }
        out(ok ? `the vault would wrap new keys with "${st.keys[0]!.label}" (${st.keys[0]!.id})` : "the vault would refuse to start with these settings");
      }
      if (!ok) process.exitCode = 1;
    });
}
