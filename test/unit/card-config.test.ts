import { ConfigError, loadConfig } from "../../src/config/config";

describe("card retention and purge settings", () => {
  it("defaults to 90 days' retention, a purge every minute, 500 rows a batch", () => {
    const c = loadConfig({});
    expect([c.cardRetentionDays, c.purgeIntervalMs, c.purgeBatchSize]).toEqual([90, 60_000, 500]);
    expect(loadConfig({ FIELDVAULT_CARD_RETENTION_DAYS: "0" }).cardRetentionDays).toBe(0);
  });

  it.each([
    ["FIELDVAULT_CARD_RETENTION_DAYS", "-1"],
    ["FIELDVAULT_CARD_RETENTION_DAYS", "ninety"],
    ["FIELDVAULT_CARD_RETENTION_DAYS", "4000"],
    ["FIELDVAULT_PURGE_INTERVAL_MS", "0"],
    ["FIELDVAULT_PURGE_BATCH_SIZE", "20000"],
  ])("refuses %s=%s naming the variable", (name, value) => {
    let problems: string[] = [];
    try {
      loadConfig({ [name]: value });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      problems = (err as ConfigError).problems;
    }
    expect(problems).toHaveLength(1);
    expect(problems[0]!.startsWith(`${name}: `)).toBe(true);
  });
});
