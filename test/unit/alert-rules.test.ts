import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fromRoot } from "../../src/config/paths";

/** The shipped alert rules parse, and the oracle and integrity alerts fire on the series they watch (promtool). */
describe("ops/prometheus/fieldvault-alerts.yml", () => {
  const rules = fromRoot("ops", "prometheus", "fieldvault-alerts.yml");
  let dir: string;
  beforeAll(() => (dir = mkdtempSync(path.join(tmpdir(), "fv-rules-"))));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("passes promtool check rules", () => {
    expect(execFileSync("promtool", ["check", "rules", rules], { encoding: "utf8" })).toContain("SUCCESS: 3 rules found");
  });

  it("fires on a deterministic-tokenize burst and on an integrity failure, not on normal volume", () => {
    const test = path.join(dir, "test.yml");
    writeFileSync(
      test,
      JSON.stringify({
        rule_files: [rules],
        evaluation_interval: "1m",
        tests: [
          {
            interval: "1m",
            input_series: [
              // 5,000 a minute from the prober, 100 a minute from the payment service
              { series: 'fieldvault_deterministic_tokenize_fields_total{caller="card-prober",category="card_number"}', values: "0+5000x20" },
              { series: 'fieldvault_deterministic_tokenize_fields_total{caller="payment-service",category="card_number"}', values: "0+100x20" },
              { series: 'fieldvault_integrity_failures_total{kind="token"}', values: "0 0 0 1 1 1 1 1 1 1" },
            ],
            alert_rule_test: [
              {
                eval_time: "10m",
                alertname: "FieldvaultDeterministicTokenizeBurst",
                exp_alerts: [
                  {
                    exp_labels: { severity: "warning", caller: "card-prober", category: "card_number" },
                    exp_annotations: { summary: "card-prober tokenizes card_number at 5k/min (enumeration oracle?)" },
                  },
                ],
              },
              { eval_time: "5m", alertname: "FieldvaultIntegrityFailure", exp_alerts: [{ exp_labels: { severity: "critical", kind: "token" }, exp_annotations: { summary: "fieldvault: token metadata failed its integrity check" } }] },
            ],
          },
        ],
      }),
    );
    expect(() => execFileSync("promtool", ["test", "rules", test], { encoding: "utf8", stdio: "pipe" })).not.toThrow();
  });
});
