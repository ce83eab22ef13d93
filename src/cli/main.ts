#!/usr/bin/env node
import { Command } from "commander";
import { registerAudit } from "./audit";
import { registerKeys } from "./keys";
import { registerSubjectRights } from "./subject-rights";

/** `fieldvault` — for security engineers (keys …) and incident responders (audit …). */
const program = new Command()
  .name("fieldvault")
  .description("fieldvault administration: key lifecycle and access-log investigation")
  .showHelpAfterError();
registerKeys(program);
registerAudit(program);
registerSubjectRights(program.commands.find((c) => c.name() === "audit")!);

program.parseAsync(process.argv).catch((err: Error & { details?: string }) => {
  process.stderr.write(`fieldvault: ${err.details ?? err.message}\n`);
  process.exit(1);
});
