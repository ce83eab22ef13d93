import type { Command } from "commander";

// TODO(issue 4): fieldvault keys list | rotate | rewrap | state | destroy | approve | rotate-root
export function registerKeys(_program: Command): void {}
