import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { chromium, type Browser } from "playwright-core";
import { fromRoot } from "../../src/config/paths";
import { logApi, tokenApi } from "../helpers/client";
import { keyApi } from "../helpers/key-admin";
import { startTestVault, type TestVault } from "../helpers/vault";

const TSX = fromRoot("node_modules", ".bin", "tsx");
const CLI = path.join("src", "cli", "main.ts");
const CHROMIUM = process.env.FIELDVAULT_TEST_CHROMIUM ?? "/usr/bin/chromium";
/** Where the rendered page's screenshot is kept for a person to look at (gitignored). */
const ARTIFACTS = fromRoot("test-artifacts");

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(TSX, [CLI, ...args], { cwd: fromRoot(), timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe("fieldvault audit report: a self-contained HTML incident report, rendered in headless Chromium", () => {
  jest.setTimeout(180_000);
  let t: TestVault;
  let dir: string;
  let browser: Browser | undefined;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "fv-report-"));
    t = await startTestVault("postgres");
    // A sample incident: a burst of card reveals, a booking reveal, refusals for a forbidden purpose,
    // and a key rotation by a security engineer.
    const pay = tokenApi(t.clients, "payment-service");
    const book = tokenApi(t.clients, "booking-service");
    const { tokens } = await pay.tokenize({
      fields: [
        { category: "card_number", value: "4111111111111111" },
        { category: "cardholder_name", value: "Report Holder" },
      ],
      ttlSeconds: 0,
      subjectRef: "",
    });
    const card = tokens[0]!.token;
    const name = tokens[1]!.token;
    for (let i = 0; i < 12; i++) await pay.detokenize({ tokens: [card], purpose: "refund", justification: `INC-7 #${i}` });
    await pay.detokenize({ tokens: [name, card], purpose: "payment_authorization", justification: "INC-7" });
    for (let i = 0; i < 4; i++) await pay.detokenize({ tokens: [card], purpose: "marketing", justification: "INC-7 probe" });
    const { tokens: pp } = await book.tokenize({ fields: [{ category: "passport_number", value: "C01X00T47" }], ttlSeconds: 0, subjectRef: "" });
    await book.detokenize({ tokens: [pp[0]!.token], purpose: "airline_manifest", justification: "VN123" });
    await keyApi(t.clients, "sec-admin-1").rotate("card_number");
  });

  afterAll(async () => {
    await browser?.close();
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("writes the report from the AccessLog API, and the page shows exactly the numbers the API returned", async () => {
    const out = path.join(dir, "report.html");
    const run = await cli(["audit", "report", "--since", "1h", "--out", out, "--address", t.vault.address, "--caller", "ir-analyst"]);
    expect(run.stderr).toMatch(/report: \d+ entries, 15 reveals, Verify ok/);
    expect(run.code).toBe(0);
    expect(statSync(out).mode & 0o777).toBe(0o600);
    const html = readFileSync(out, "utf8");
    // Self-contained: nothing fetched from elsewhere, no script at all, and no value in the file.
    expect(html).not.toMatch(/<script|<link|src=|https?:\/\/(?!www\.w3\.org)/i);
    for (const secret of ["4111111111111111", "Report Holder", "C01X00T47"]) expect(html).not.toContain(secret);

    // What the API says, asked independently of the report.
    const log = logApi(t.clients, "ir-analyst");
    const reveals = (await log.query({ action: "detokenize", outcome: "allowed", pageSize: 1000 })).filter((e) => e.action === "detokenize");
    const denied = await log.query({ action: "detokenize", outcome: "denied", pageSize: 1000 });
    const perCaller = new Map<string, number>();
    for (const e of reveals) perCaller.set(e.caller, (perCaller.get(e.caller) ?? 0) + 1);
    expect(perCaller.get("payment-service")).toBe(14);
    expect(perCaller.get("booking-service")).toBe(1);

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
    });
    const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
    const problems: string[] = [];
    const requests: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error" || m.type() === "warning") problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`));
    page.on("request", (r) => requests.push(r.url()));
    const url = pathToFileURL(out).href;
    await page.goto(url, { waitUntil: "load" });

    // The timeline of reveals: the bars of each caller add up to that caller's reveals in the API.
    const bars = await page.$$eval("#reveals-timeline rect[data-series]", (els) =>
      els.map((e) => ({ series: e.getAttribute("data-series")!, count: Number(e.getAttribute("data-count")), h: Number(e.getAttribute("height")) })),
    );
    const drawn = new Map<string, number>();
    for (const b of bars) {
      expect(b.h).toBeGreaterThan(0);
      drawn.set(b.series, (drawn.get(b.series) ?? 0) + b.count);
    }
    expect(Object.fromEntries(drawn)).toEqual(Object.fromEntries(perCaller));

    const refusals = await page.$$eval("#refusals-timeline rect[data-series='denied']", (els) => els.reduce((a, e) => a + Number(e.getAttribute("data-count")), 0));
    expect(refusals).toBe(denied.length);
    expect(refusals).toBe(4);

    const top = await page.$$eval("#top tbody tr", (rows) => rows.map((r) => [...r.querySelectorAll("td")].map((td) => td.textContent)));
    expect(top[0]).toEqual(["payment-service", "card_number", "refund", "12"]);
    expect(top).toContainEqual(["booking-service", "passport_number", "airline_manifest", "1"]);

    const keyAdmin = await page.$$eval("#key-admin tbody tr td:nth-child(4)", (tds) => tds.map((td) => td.textContent));
    expect(keyAdmin).toContain("key_rotate");
    expect(await page.getAttribute("#verify", "data-ok")).toBe("true");
    expect(await page.getAttribute("#summary", "data-reveals")).toBe("15");

    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, "incident-report.png"), fullPage: true });
    expect(statSync(path.join(ARTIFACTS, "incident-report.png")).size).toBeGreaterThan(10_000);

    expect(problems).toEqual([]);
    expect(requests).toEqual([url]);

    // Building the report was itself a log read, logged like every other.
    const reads = await log.query({ action: "log_query", pageSize: 1000 });
    expect(reads.some((e) => e.caller === "ir-analyst")).toBe(true);
  });

  it("refuses a caller without log_read, and writes nothing", async () => {
    const out = path.join(dir, "denied.html");
    const run = await cli(["audit", "report", "--since", "1h", "--out", out, "--address", t.vault.address, "--caller", "payment-service"]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/may not read the access log/);
    expect(() => statSync(out)).toThrow();
  });
});
