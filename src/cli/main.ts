#!/usr/bin/env node
import { Command } from "commander";
import { CLI_WORDS, explainConnectionError } from "../sdk/connection-errors";
import { registerAudit } from "./audit";
import { registerHsm } from "./hsm";
import { registerImport } from "./import";
import { connectionInUse } from "./connect";
import { registerKeys } from "./keys";
import { exitQuietlyOnClosedPipe } from "./pipe";
import { registerReport } from "./report";
import { terminalSafe } from "./terminal-safe";

exitQuietlyOnClosedPipe();
import { registerSubjectRights } from "./subject-rights";

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
registerSubjectRights(program.commands.find((c) => c.name() === "audit")!);

program.parseAsync(process.argv).catch((err: Error & { code?: number; details?: string }) => {
  const conn = connectionInUse();
  const explained = conn && explainConnectionError(err.code, err.details ?? "", { ...conn, words: CLI_WORDS });
  process.stderr.write(`fieldvault: ${terminalSafe(explained ?? err.details ?? err.message)}\n`);
  process.exit(1);
});
