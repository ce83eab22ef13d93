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

// Inclusive time: a sample counts once for every function (and package) on its stack. Shows where
// a use case's CPU goes, whatever native or library code it ends in.
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const isIdle = (id: number) => byId.get(id)!.callFrame.functionName === "(idle)";
const busy = [...self].filter(([id]) => !isIdle(id)).reduce((a, [, t]) => a + t, 0);
const incFn = new Map<string, number>();
const incPkg = new Map<string, number>();
for (const [id, t] of self) {
  if (isIdle(id)) continue;
  const fns = new Set<string>();
  const pkgs = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const n = byId.get(cur)!;
    if (n.callFrame.functionName === "(root)") break;
    const w = where(n.callFrame.url);
    if (n.callFrame.functionName) fns.add(`${n.callFrame.functionName}  ${w}:${n.callFrame.lineNumber + 1}`);
    pkgs.add(w.split(":")[0]!.startsWith("src/") || w.startsWith(".build") ? "(vault code)" : w.split(":")[0]!);
  }
  for (const f of fns) incFn.set(f, (incFn.get(f) ?? 0) + t);
  for (const p of pkgs) incPkg.set(p, (incPkg.get(p) ?? 0) + t);
}
const showBusy = (m: Map<string, number>, n: number) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .forEach(([k, t]) => process.stdout.write(`${((t / busy) * 100).toFixed(1).padStart(5)}%  ${k}\n`));
process.stdout.write(`\ninclusive, as a share of busy (non-idle) time ${(busy / 1e6).toFixed(1)} s, by function:\n`);
showBusy(incFn, Number(process.env.PROFILE_INCLUSIVE_TOP ?? 60));
process.stdout.write("\ninclusive by package:\n");
showBusy(incPkg, 25);
