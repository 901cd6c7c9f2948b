// Takes the README's dashboard screenshot from a running mesh (`make run`) in Debian's Chromium:
//   BROWSER_DIR=tests/browser node scripts/dashboard_screenshot.mjs [URL] [OUT] [RANGE_S] [QUERY]
// URL defaults to http://127.0.0.1:8056/dashboard, OUT to docs/telemetry-dashboard.png,
// RANGE_S to 900 (the page's "15 minutes"). It waits for the page's first refresh, types
// QUERY (default: the streams open by service) in the query box, waits for its chart, and writes the
// whole page. Console errors are printed and make it exit 1, so a broken page is not shot.
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

// playwright-core is installed in tests/browser (make browser-deps)
const require = createRequire(join(resolve(process.env.BROWSER_DIR || "tests/browser"),
                                   "package.json"));
const { chromium } = require("playwright-core");

const [url = "http://127.0.0.1:8056/dashboard", out = "docs/telemetry-dashboard.png",
       range = "900", query = "sum by (job) (rpc_server_active_streams)"] =
  process.argv.slice(2);
const errors = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 },
                                       deviceScaleFactor: 1 });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url, { waitUntil: "load" });
  const refreshed = (n) => page.waitForFunction(
    (runs) => window.geoplexDashboard && window.geoplexDashboard.ready === true
      && window.geoplexDashboard.refreshes >= runs, n, { timeout: 30000 });
  await refreshed(1);
  const before = await page.evaluate(() => window.geoplexDashboard.refreshes);
  await page.selectOption("#range", range);  // a change refreshes every panel
  await refreshed(before + 1);
  await page.fill("#query", query);
  await page.press("#query", "Enter");
  await page.waitForFunction(() => window.geoplexDashboard.query.runs >= 1, null,
                             { timeout: 20000 });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out} (${url}, the last ${range} s)`);
} finally {
  await browser.close();
}
if (errors.length) {
  console.error(`the page logged errors:\n  ${errors.join("\n  ")}`);
  process.exit(1);
}
