import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, stringify } from "yaml";
import { fromRoot } from "../../../src/config/paths";
import { tempDir } from "../../helpers/temp";

/** A copy of the default policy with edits applied, in a temp file; returns its path. */
export function policyFile(edit: (doc: Record<string, any>) => void): string {
  const doc = parse(readFileSync(fromRoot("policy", "default.yaml"), "utf8")) as Record<string, any>;
  edit(doc);
  const file = join(tempDir("fv-policy-"), "policy.yaml");
  writeFileSync(file, stringify(doc));
  return file;
}
