#!/usr/bin/env node
import { Command } from "commander";
import { registerAudit } from "./audit";
import { registerImport } from "./import";
import { registerKeys } from "./keys";

/** `fieldvault` — for security engineers (keys …) and incident responders (audit …). */
const program = new Command()
  .name("fieldvault")
  .description("fieldvault administration: key lifecycle and access-log investigation")
  .showHelpAfterError();
registerKeys(program);
registerAudit(program);
registerImport(program);

program.parseAsync(process.argv).catch((err: Error & { details?: string }) => {
  process.stderr.write(`fieldvault: ${err.details ?? err.message}\n`);
  process.exit(1);
});
