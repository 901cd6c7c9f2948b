// Drives Debian's Chromium through the telemetry dashboard, for test_dashboard_page.py:
//   BROWSER_DIR=tests/browser node dashboard_page.mjs URL OUT_DIR QUERY
// Opens the page, waits until its first refresh is done, and writes OUT_DIR/page.png (the
// whole page), OUT_DIR/panel.png (the requests/s panel's chart) and, after typing QUERY in
// the query box, OUT_DIR/query.png (its chart); then opens the page again with the chart
// library reported missing and alerting off. OUT_DIR/report.json: console messages, page
// errors, failed and 4xx/5xx requests, the page state (window.geoplexDashboard), texts and
// the charts' canvas boxes in screenshot pixels.
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

// playwright-core is installed in tests/browser (make browser-deps)
const require = createRequire(join(process.env.BROWSER_DIR, "package.json"));
const { chromium } = require("playwright-core");

const [url, outDir, query] = process.argv.slice(2);
const report = { console: [], pageErrors: [], failedRequests: [], badResponses: [] };

function watch(page, into) {
  page.on("console", (m) => into.console.push({ type: m.type(), text: m.text(),
                                                url: (m.location() || {}).url || "" }));
  page.on("pageerror", (e) => into.pageErrors.push(String(e)));
  page.on("requestfailed", (r) => into.failedRequests.push([
    r.failure() ? r.failure().errorText : "", r.url()]));
  page.on("response", (r) => { if (r.status() >= 400) into.badResponses.push([r.status(), r.url()]); });
}

const ready = (page) => page.waitForFunction(
  () => window.geoplexDashboard && window.geoplexDashboard.ready === true, null,
  { timeout: 30000 });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 },
                                       deviceScaleFactor: 1 });
  watch(page, report);
  await page.goto(url, { waitUntil: "load" });
  await ready(page);
  report.state = await page.evaluate(() => JSON.parse(JSON.stringify(window.geoplexDashboard)));
  report.panelStatus = await page.evaluate(() => Object.fromEntries(
    [...document.querySelectorAll(".panel")].map((el) => [el.id,
      el.querySelector(".status").textContent])));
  report.alertsStatus = await page.textContent("#alerts-status");
  report.alertCells = await page.evaluate(() => [...document.querySelectorAll("#alerts td")]
    .map((td) => td.textContent));
  report.alertElements = await page.evaluate(
    () => document.querySelectorAll("#alerts tbody *:not(tr):not(td)").length);
  report.silencesStatus = await page.textContent("#silences-status");
  report.silenceCells = await page.evaluate(() => [...document.querySelectorAll("#silences td")]
    .map((td) => td.textContent));
  report.silenceElements = await page.evaluate(
    () => document.querySelectorAll("#silences tbody *:not(tr):not(td)").length);
  report.legend = await page.evaluate(() => [...document.querySelectorAll(
    "#panel-rps .u-legend .u-series .u-label")].map((el) => el.textContent));
  const panelCanvas = page.locator("#panel-rps canvas");
  report.panelCanvas = await panelCanvas.boundingBox();
  await page.screenshot({ path: join(outDir, "page.png"), fullPage: true });
  await page.locator("#panel-rps .chart").screenshot({ path: join(outDir, "panel.png") });

  await page.fill("#query", query);
  await page.press("#query", "Enter");
  await page.waitForFunction(() => window.geoplexDashboard.query.runs >= 1, null,
                             { timeout: 20000 });
  report.queryState = await page.evaluate(() => window.geoplexDashboard.query);
  report.queryStatus = await page.textContent("#query-status");
  report.queryLegend = await page.evaluate(() => [...document.querySelectorAll(
    "#query-chart .u-legend .u-series .u-label")].map((el) => el.textContent));
  await page.locator("#query-chart").screenshot({ path: join(outDir, "query.png") });
  await page.screenshot({ path: join(outDir, "page-with-query.png"), fullPage: true });

  // without the chart library: the page says so and still works
  const bare = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  report.bare = { console: [], pageErrors: [], failedRequests: [], badResponses: [] };
  watch(bare, report.bare);
  await bare.route("**/dashboard/config.json", (route) => route.fulfill({
    json: { chartLibrary: false, install: "make browser-deps", notifiers: 0 } }));
  // and a server without rules: its /api/v1/alerts answers 404
  await bare.route("**/api/v1/alerts", (route) => route.fulfill({
    status: 404, json: { status: "error", errorType: "not_found", error: "no rules" } }));
  await bare.goto(url, { waitUntil: "load" });
  await ready(bare);
  report.bare.notice = await bare.textContent("#library");
  report.bare.noticeVisible = await bare.isVisible("#library");
  report.bare.state = await bare.evaluate(() => JSON.parse(JSON.stringify(window.geoplexDashboard)));
  report.bare.alertsStatus = await bare.textContent("#alerts-status");
  report.bare.canvases = await bare.evaluate(() => document.querySelectorAll("canvas").length);
} finally {
  await browser.close();
}
writeFileSync(join(outDir, "report.json"), JSON.stringify(report, null, 2));
