import type { Command } from "commander";

// TODO(issue 3): fieldvault audit query | verify | export
export function registerAudit(_program: Command): void {}
