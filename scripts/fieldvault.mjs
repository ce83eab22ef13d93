#!/usr/bin/env node
// `npx fieldvault …` in a checkout: `npm ci` links this file as node_modules/.bin/fieldvault
// (scripts/link-bin.mjs). It builds when the sources changed (as `npm start` does), then runs the
// compiled CLI, dist/src/cli/main.js. Inside the image `fieldvault` is that compiled file itself.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const built = spawnSync(process.execPath, [path.join(root, "scripts", "build-if-changed.mjs")], { stdio: ["ignore", "inherit", "inherit"] });
if (built.status !== 0) process.exit(built.status ?? 1);
createRequire(import.meta.url)(path.join(root, "dist", "src", "cli", "main.js"));
