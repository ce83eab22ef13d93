// npm links the bins of dependencies into node_modules/.bin, never the project's own. This root
// `postinstall` (run by `npm ci`) links scripts/fieldvault.mjs there, so `npx fieldvault …` runs this
// checkout's CLI and npx never looks for a package of that name in the registry.
import { chmodSync, existsSync, mkdirSync, rmSync, symlinkSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const target = path.join(root, "scripts", "fieldvault.mjs");
if (existsSync(target)) {
  const bin = path.join(root, "node_modules", ".bin");
  mkdirSync(bin, { recursive: true });
  const link = path.join(bin, "fieldvault");
  rmSync(link, { force: true });
  symlinkSync(path.relative(bin, target), link);
  chmodSync(target, 0o755);
}
