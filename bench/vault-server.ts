/**
 * The vault under test in a process of its own (so its peak RSS is its own). Configured from the
 * environment like `npm start`; logs go to stdout, which the bench points at /dev/null.
 */
import { startVault } from "../src/app";
import { loadConfig } from "../src/config/config";

async function main(): Promise<void> {
  const vault = await startVault(loadConfig(process.env));
  process.send?.({ ready: true, address: vault.address, metricsAddress: vault.metricsAddress });
  const stop = () =>
    vault.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  process.once("SIGTERM", stop);
  process.once("disconnect", stop);
}

main().catch((err) => {
  process.stderr.write(`bench vault failed to start: ${(err as Error).message}\n`);
  process.exit(1);
});
