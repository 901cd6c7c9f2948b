// Drives Debian's Chromium through the map page, for tests/integration/maps/test_map_page.py:
//   node map_page.mjs URL OUT_DIR SEARCH_TEXT FROM_LAT,FROM_LNG TO_LAT,TO_LNG
// Opens the page, searches SEARCH_TEXT in the search box, clicks FROM then TO on the map
// and waits for the route, then writes OUT_DIR/route.png (a screenshot of the map) and
// OUT_DIR/report.json: console messages, page errors, failed requests, the first search
// result, the ETA text, and the route's points in screenshot pixels; then, with the route
// removed, the live traffic read again: OUT_DIR/traffic.png and the slowed roads' points.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, outDir, searchText, fromRaw, toRaw] = process.argv.slice(2);
const parse = (raw) => raw.split(",").map(Number);
const report = { console: [], pageErrors: [], failedRequests: [], badResponses: [] };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  page.on("console", (m) => report.console.push({ type: m.type(), text: m.text() }));
  page.on("pageerror", (e) => report.pageErrors.push(String(e)));
  // a tile the map no longer needs (the view moved on) is aborted: not a failure
  page.on("requestfailed", (r) => {
    const why = r.failure() ? r.failure().errorText : "";
    if (why !== "net::ERR_ABORTED") report.failedRequests.push([why, r.url()]);
  });
  page.on("response", (r) => { if (r.status() >= 400) report.badResponses.push([r.status(), r.url()]); });

  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => window.geoplex && window.geoplex.ready === true);

  await page.fill("#q", searchText);
  await page.press("#q", "Enter");
  await page.waitForFunction(() => window.geoplex.searches >= 1, null, { timeout: 20000 });
  report.firstResult = await page.textContent("#results li");

  // view both ends, then click them where the map draws them
  const [from, to] = [parse(fromRaw), parse(toRaw)];
  const still = () => page.waitForFunction(() => !window.geoplex.moving, null,
                                           { timeout: 20000 });
  await still();  // the search's pan and zoom have ended
  await page.evaluate(([a, b]) => window.geoplex.map.fitBounds([a, b], { padding: [80, 80],
    animate: false }), [from, to]);
  await still();
  const box = await page.locator("#map").boundingBox();
  for (const p of [from, to]) {
    const xy = await page.evaluate((q) => {
      const pt = window.geoplex.map.latLngToContainerPoint(q);
      return [pt.x, pt.y];
    }, p);
    await page.mouse.click(box.x + xy[0], box.y + xy[1]);
  }
  try {
    await page.waitForFunction(() => window.geoplex.routes >= 1, null, { timeout: 30000 });
  } catch (e) {
    report.routeInfo = await page.textContent("#route-info");
    await page.screenshot({ path: join(outDir, "failed.png") });
    writeFileSync(join(outDir, "report.json"), JSON.stringify(report, null, 2));
    throw e;
  }
  await still();  // the map moved to fit the route: wait until it stands and its tiles are in
  await page.waitForFunction(() => [...document.querySelectorAll(".leaflet-tile")]
    .every((t) => t.complete), null, { timeout: 30000 });
  report.eta = await page.textContent("#route-info .eta");
  report.routePixels = await page.evaluate(() => window.geoplex.route.getLatLngs().map((q) => {
    const pt = window.geoplex.map.latLngToContainerPoint(q);
    return [pt.x, pt.y];
  }));
  await page.locator("#map").screenshot({ path: join(outDir, "route.png") });
  await page.screenshot({ path: join(outDir, "page.png") });

  // the live traffic: the route out of the way, the traffic read again for this view
  await page.evaluate(() => window.geoplex.route.remove());
  const before = await page.evaluate(() => window.geoplex.traffic);
  await page.evaluate(() => window.geoplex.refreshTraffic());
  await page.waitForFunction((n) => window.geoplex.traffic > n, before, { timeout: 20000 });
  report.trafficInfo = await page.textContent("#traffic-info");
  report.trafficPixels = await page.evaluate(() => {
    const out = [];
    window.geoplex.trafficLayer.eachLayer((line) => {
      for (const q of line.getLatLngs()) {
        const pt = window.geoplex.map.latLngToContainerPoint(q);
        out.push([pt.x, pt.y]);
      }
    });
    return out;
  });
  await page.locator("#map").screenshot({ path: join(outDir, "traffic.png") });
} finally {
  await browser.close();
}
writeFileSync(join(outDir, "report.json"), JSON.stringify(report, null, 2));
