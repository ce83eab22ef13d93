/**
 * Summarises a V8 .cpuprofile (from `npm run bench -- --profile`): self time by function and by
 * package, heaviest first. `tsx bench/profile-summary.ts <file.cpuprofile> [top]`
 */
import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const [file, topArg] = process.argv.slice(2);
const profile = JSON.parse(readFileSync(file!, "utf8")) as Profile;
const top = Number(topArg ?? 30);
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<number, number>();
profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
const total = [...self.values()].reduce((a, b) => a + b, 0);

const where = (url: string) => {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  if (url.includes("/src/")) return "src/" + url.split("/src/")[1];
  if (url.startsWith("node:")) return url;
  return url ? url.split("/").slice(-2).join("/") : "(native)";
};
const fnTotals = new Map<string, number>();
const pkgTotals = new Map<string, number>();
for (const [id, t] of self) {
  const n = byId.get(id)!;
  const key = `${n.callFrame.functionName || "(anonymous)"}  ${where(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  fnTotals.set(key, (fnTotals.get(key) ?? 0) + t);
  const pkg = where(n.callFrame.url).split(":")[0]!.replace(/\/[^/]*$/, (s) => (s.includes(".") ? "" : s));
  pkgTotals.set(pkg, (pkgTotals.get(pkg) ?? 0) + t);
}
const show = (m: Map<string, number>, n: number) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .forEach(([k, t]) => process.stdout.write(`${((t / total) * 100).toFixed(1).padStart(5)}%  ${k}\n`));
process.stdout.write(`total ${(total / 1e6).toFixed(1)} s sampled\n\nby function (self):\n`);
show(fnTotals, top);
process.stdout.write("\nby file/package (self):\n");
show(pkgTotals, 20);
