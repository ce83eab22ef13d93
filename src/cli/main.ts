#!/usr/bin/env node
import { Command } from "commander";
import { registerAudit } from "./audit";
import { registerHsm } from "./hsm";
import { registerImport } from "./import";
import { registerKeys } from "./keys";
import { registerReport } from "./report";

/** `fieldvault` — for security engineers (keys …) and incident responders (audit …). */
const program = new Command()
  .name("fieldvault")
  .description("fieldvault administration: key lifecycle and access-log investigation")
  .showHelpAfterError();
registerKeys(program);
registerAudit(program);
registerReport(program.commands.find((c) => c.name() === "audit")!);
registerHsm(program);
registerImport(program);

program.parseAsync(process.argv).catch((err: Error & { details?: string }) => {
  process.stderr.write(`fieldvault: ${err.details ?? err.message}\n`);
  process.exit(1);
});
