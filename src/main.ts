import { startVault } from "./app";
import { ConfigError, loadConfig } from "./config/config";
import { installSignals } from "./runtime/signals";

/** Process entry point: config → vault → signals. Everything else is wired in app.ts. */
async function main(): Promise<void> {
  const config = loadConfig();
  const vault = await startVault(config);
  let stopping = false;
  installSignals({
    log: vault.log,
    reload() {
      const problems = vault.policy.reload();
      if (problems) vault.log.error({ problems }, "policy reload refused; the previous policy stays in force");
      else vault.log.info({ file: config.policyFile }, "policy reloaded");
    },
    stop(reason) {
      if (stopping) return;
      stopping = true;
      vault.log.info({ signal: reason }, "shutting down");
      vault.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    },
  });
}

main().catch((err) => {
  if (err instanceof ConfigError || (err as Error).name === "PolicyError") {
    process.stderr.write(`fieldvault: ${(err as Error).message}\n`);
  } else {
    process.stderr.write(`fieldvault: failed to start: ${(err as Error).message}\n`);
  }
  process.exit(1);
});
