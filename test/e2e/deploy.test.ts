import { execFile } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { fromRoot } from "../../src/config/paths";
import { tokenApi } from "../helpers/client";
import { startTestVault, type TestVault } from "../helpers/vault";

/**
 * What a platform team plugs in on day one: the alert rules (promtool), the dashboard and the
 * Kubernetes manifests. Every metric they name must be one a running vault really exports.
 */

const PROMTOOL = process.env.FIELDVAULT_TEST_PROMTOOL ?? "promtool";
const ALERTS = fromRoot("deploy", "prometheus", "alerts.yaml");
const DASHBOARD = fromRoot("deploy", "grafana", "fieldvault.json");
const K8S = fromRoot("deploy", "kubernetes");

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) =>
    execFile(cmd, args, { cwd: fromRoot(), timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr })),
  );
}

interface Rule {
  alert: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rules = (): Rule[] =>
  (parseAllDocuments(readFileSync(ALERTS, "utf8"))[0]!.toJS() as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const dashboard = () => JSON.parse(readFileSync(DASHBOARD, "utf8")) as { panels: { type: string; title: string; targets?: { expr: string }[] }[] };

/** Metric families named in PromQL, with histogram/summary sample suffixes folded into the family. */
function metricNames(exprs: string[]): Set<string> {
  const names = new Set<string>();
  for (const e of exprs) for (const m of e.matchAll(/\bfieldvault_[a-z0-9_]+/g)) names.add(m[0].replace(/_(bucket|count|sum)$/, ""));
  return names;
}

describe("alert rules", () => {
  it("pass their promtool unit tests (each fires on its incident and stays quiet otherwise)", async () => {
    const check = await run(PROMTOOL, ["check", "rules", ALERTS]);
    expect(check.out).toContain("SUCCESS");
    expect(check.code).toBe(0);
    const test = await run(PROMTOOL, ["test", "rules", fromRoot("deploy", "prometheus", "alerts.test.yaml")]);
    expect(test.out).toContain("SUCCESS");
    expect(test.code).toBe(0);
  });

  it("cover every incident the on-call must hear about, each with a unit test and a runbook section that exists", () => {
    const all = rules();
    const names = all.map((r) => r.alert);
    for (const required of [
      "FieldvaultAccessLogCommitFailures",
      "FieldvaultAuditVerifyBroken",
      "FieldvaultBreakGlassUsed",
      "FieldvaultRevealsAboveUsual",
      "FieldvaultRefusalSpike",
      "FieldvaultKeyPastCryptoperiod",
      "FieldvaultRedisLocalBudgets",
      "FieldvaultPostgresPoolSaturated",
      "FieldvaultCommitLatencyHigh",
    ])
      expect(names).toContain(required);
    const tests = readFileSync(fromRoot("deploy", "prometheus", "alerts.test.yaml"), "utf8");
    const runbook = readFileSync(fromRoot("docs", "runbooks.md"), "utf8");
    const anchors = new Set(
      [...runbook.matchAll(/^#{2,3} (.+)$/gm)].map((m) => m[1]!.trim().toLowerCase().replace(/[^\w\s-]/g, "").replace(/\s+/g, "-")),
    );
    for (const r of all) {
      expect(tests).toContain(`alertname: ${r.alert}`);
      expect(["critical", "warning"]).toContain(r.labels?.severity);
      const url = r.annotations?.runbook_url ?? "";
      expect(url).toMatch(/^docs\/runbooks\.md#[a-z0-9-]+$/);
      expect(anchors).toContain(url.split("#")[1]);
    }
  });
});

describe("dashboard", () => {
  it("has the panels an on-call looks for, every one with a query", () => {
    const d = dashboard();
    const titles = d.panels.filter((p) => p.type !== "row").map((p) => p.title);
    for (const t of [/by method/i, /Errors/i, /Latency/i, /Reveals by caller × category × purpose/, /Denials and rate limits/, /Commit flush size/, /Commit latency/, /Key versions/, /Rewrap/, /PostgreSQL/, /Redis/])
      expect(titles.some((x) => t.test(x))).toBe(true);
    for (const p of d.panels.filter((p) => p.type !== "row")) expect(p.targets?.length).toBeGreaterThan(0);
  });
});

describe("every metric named by an alert rule or a dashboard panel is exported by a running vault", () => {
  let t: TestVault;
  beforeAll(async () => {
    t = await startTestVault("postgres", { FIELDVAULT_METRICS_LISTEN: "127.0.0.1:0", FIELDVAULT_HEALTH_INTERVAL_MS: "200" });
    await new Promise((r) => setTimeout(r, 1000)); // a health probe has run (fieldvault_redis_up exists from the first)
    const pay = tokenApi(t.clients, "payment-service");
    const { tokens } = await pay.tokenize({ fields: [{ category: "card_number", value: "4111111111111111" }], ttlSeconds: 0, subjectRef: "" });
    await pay.detokenize({ tokens: [tokens[0]!.token], purpose: "refund", justification: "METRICS" });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("scrapes /metrics and finds each family", async () => {
    const text = await (await fetch(`http://${t.vault.metricsAddress}/metrics`)).text();
    const exported = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
    const named = metricNames([...rules().map((r) => r.expr), ...dashboard().panels.flatMap((p) => (p.targets ?? []).map((x) => x.expr))]);
    expect(named.size).toBeGreaterThan(15);
    const missing = [...named].filter((n) => !exported.has(n));
    expect(missing).toEqual([]);
  });
});

describe("Kubernetes manifests", () => {
  const docs = readdirSync(K8S)
    .filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")
    .flatMap((f) => parseAllDocuments(readFileSync(path.join(K8S, f), "utf8")).map((d) => d.toJS() as Record<string, any>));
  const kind = (k: string) => docs.filter((d) => d.kind === k);

  it("are valid YAML with one of each object, all listed in the kustomization", () => {
    expect(docs.map((d) => d.kind).sort()).toEqual(["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service", "ServiceMonitor"]);
    const kz = parseAllDocuments(readFileSync(path.join(K8S, "kustomization.yaml"), "utf8"))[0]!.toJS() as { resources: string[] };
    expect(kz.resources.sort()).toEqual(readdirSync(K8S).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml").sort());
  });

  it("run the vault non-root on a read-only root filesystem, with health-service probes and sized requests", () => {
    const dep = kind("Deployment")[0]!;
    const pod = dep.spec.template.spec;
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.automountServiceAccountToken).toBe(false);
    const c = pod.containers[0];
    expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
    expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext.capabilities.drop).toEqual(["ALL"]);
    for (const probe of ["livenessProbe", "readinessProbe"]) {
      // The health service over mutual TLS (the kubelet's own gRPC probe cannot present a certificate).
      expect(c[probe].exec.command).toEqual(["node", "dist/src/healthcheck.js"]);
    }
    expect(c.resources.requests.cpu).toMatch(/^\d+m?$/);
    expect(c.resources.requests.memory).toMatch(/^\d+(Mi|Gi)$/);
    expect(c.resources.limits.memory).toBeDefined();
    // The probe's own client certificate is configured, and the image's build output is what it runs.
    const env = new Map<string, unknown>(c.env.map((e: { name: string; value?: string }) => [e.name, e.value ?? e]));
    expect(env.get("FIELDVAULT_MODE")).toBe("production");
    expect(env.has("FIELDVAULT_HEALTHCHECK_CERT_FILE")).toBe(true);
    // Every FIELDVAULT_* variable the manifest sets is one the README documents.
    const readme = readFileSync(fromRoot("README.md"), "utf8");
    for (const name of env.keys()) expect(readme).toContain(`\`${name}\``);
    // Secrets are mounted read-only, never baked into the image or the manifest.
    for (const m of c.volumeMounts.filter((m: { mountPath: string }) => m.mountPath.startsWith("/etc/"))) expect(m.readOnly).toBe(true);
  });

  it("keep two pods through a disruption, deny traffic by default and let Prometheus scrape the metrics port", () => {
    const dep = kind("Deployment")[0]!;
    const labels = dep.spec.template.metadata.labels;
    const pdb = kind("PodDisruptionBudget")[0]!;
    expect(pdb.spec.minAvailable).toBeGreaterThanOrEqual(2);
    expect(pdb.spec.minAvailable).toBeLessThan(dep.spec.replicas);
    for (const sel of [pdb.spec.selector.matchLabels, kind("Service")[0]!.spec.selector, kind("NetworkPolicy")[0]!.spec.podSelector.matchLabels])
      for (const [k, v] of Object.entries(sel)) expect(labels[k]).toBe(v);
    const np = kind("NetworkPolicy")[0]!;
    expect(np.spec.policyTypes.sort()).toEqual(["Egress", "Ingress"]);
    const ingressPorts = np.spec.ingress.flatMap((r: { ports: { port: number }[] }) => r.ports.map((p) => p.port));
    expect(ingressPorts.sort()).toEqual([50051, 9464]);
    const svc = kind("Service")[0]!;
    const sm = kind("ServiceMonitor")[0]!;
    expect(svc.spec.ports.map((p: { name: string }) => p.name)).toContain(sm.spec.endpoints[0].port);
    expect(sm.spec.endpoints[0].path).toBe("/metrics");
  });
});
