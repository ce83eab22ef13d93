import { existsSync } from "node:fs";
import path from "node:path";

/** The package root (where package.json is), whether running from src/ or dist/. */
export function projectRoot(): string {
  let dir = __dirname;
  while (!existsSync(path.join(dir, "package.json"))) {
    const up = path.dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
  return dir;
}

export const fromRoot = (...parts: string[]) => path.join(projectRoot(), ...parts);
