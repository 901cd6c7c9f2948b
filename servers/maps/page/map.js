// The Geoplex map page: tiles from /tiles, search through /api/geocode,
// click-to-route through /api/route, live traffic from /api/traffic.
// The page state is on window.geoplex for tests and the console.
"use strict";

(function () {
  const ROUTE_COLOUR = "#8e24aa";   // the route line (tests look for it)
  const TRAFFIC = [[0.5, "#d50000"], [0.8, "#ff9100"], [Infinity, "#00c853"]];
  const state = { from: null, to: null, route: null, markers: [], routes: 0, searches: 0,
                  traffic: 0, moving: false };
  window.geoplex = state;

  const map = L.map("map", { zoomControl: true }).setView([60.1699, 24.9384], 14);
  state.map = map;
  map.on("movestart zoomstart", () => { state.moving = true; });
  map.on("moveend zoomend", () => { state.moving = false; });
  L.tileLayer("/tiles/{z}/{x}/{y}.png", {
    maxZoom: 18, tileSize: 256,
    attribution: "Map data &copy; OpenStreetMap contributors (ODbL)",
  }).addTo(map);
  const trafficLayer = L.geoJSON(null, {
    style: (f) => ({ color: TRAFFIC.find(([r]) => f.properties.ratio < r)[1],
                     weight: 5, opacity: 0.85 }),
  }).addTo(map);
  state.trafficLayer = trafficLayer;

  function text(id, value) { document.getElementById(id).textContent = value; }

  async function getJson(url) {
    const response = await fetch(url);
    const body = await response.json();
    if (!response.ok) {
      const e = body.error || {};
      throw new Error(`${e.code || response.status}: ${e.message || "request failed"}`);
    }
    return body;
  }

  function minutes(seconds) {
    return seconds < 90 ? `${Math.round(seconds)} s` : `${Math.round(seconds / 60)} min`;
  }

  async function route(from, to) {
    text("route-info", "Routing…");
    const url = `/api/route?from=${from.lat},${from.lng}&to=${to.lat},${to.lng}&mode=drive`;
    try {
      const answer = await getJson(url);
      const best = answer.routes[0];
      if (state.route) state.route.remove();
      state.route = L.polyline(best.coordinates, { color: ROUTE_COLOUR, weight: 7,
                                                   opacity: 0.95 }).addTo(map);
      map.fitBounds(state.route.getBounds(), { padding: [40, 40] });
      const info = document.getElementById("route-info");
      info.innerHTML = "";
      const eta = document.createElement("div");
      eta.className = "eta";
      eta.textContent = `${minutes(best.duration_s)} · ${(best.distance_m / 1000).toFixed(1)} km`;
      const summary = document.createElement("div");
      summary.textContent = best.summary ? `via ${best.summary}` : "";
      const free = document.createElement("div");
      free.textContent = `without traffic ${minutes(best.static_duration_s)}`;
      info.append(eta, summary, free);
      state.routes += 1;
      return best;
    } catch (e) {
      text("route-info", `No route: ${e.message}`);
      throw e;
    }
  }

  function mark(latlng) {
    const m = L.circleMarker(latlng, { radius: 7, color: "#222", fillColor: "#fff",
                                       fillOpacity: 1, weight: 3 }).addTo(map);
    state.markers.push(m);
  }

  map.on("click", (event) => {
    if (!state.from || state.to) {
      state.markers.forEach((m) => m.remove());
      state.markers = [];
      state.from = event.latlng;
      state.to = null;
      mark(event.latlng);
      text("route-info", "Now click where to.");
      return;
    }
    state.to = event.latlng;
    mark(event.latlng);
    route(state.from, state.to).catch(() => {});
  });

  async function search(q) {
    const results = document.getElementById("results");
    results.innerHTML = "";
    const answer = await getJson(`/api/geocode?q=${encodeURIComponent(q)}&limit=5`);
    for (const c of answer.candidates) {
      const li = document.createElement("li");
      li.textContent = c.label;
      li.addEventListener("click", () => map.setView([c.lat, c.lng], 17));
      results.append(li);
    }
    if (answer.candidates.length) {
      const best = answer.candidates[0];
      map.setView([best.lat, best.lng], 17);
    } else {
      const li = document.createElement("li");
      li.textContent = "Nothing found";
      results.append(li);
    }
    state.searches += 1;
    return answer.candidates;
  }

  document.getElementById("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = document.getElementById("q").value.trim();
    if (q) search(q).catch((e) => text("route-info", `Search failed: ${e.message}`));
  });

  async function refreshTraffic() {
    const b = map.getBounds();
    const bbox = [b.getSouth(), b.getWest(), b.getNorth(), b.getEast()]
      .map((v) => v.toFixed(5)).join(",");
    try {
      const answer = await getJson(`/api/traffic?bbox=${bbox}`);
      trafficLayer.clearLayers();
      trafficLayer.addData(answer);
      text("traffic-info", answer.features.length
        ? `Live traffic: ${answer.features.length} slowed segments`
        : "Live traffic: free flow");
      state.traffic += 1;
    } catch (e) {
      text("traffic-info", `Live traffic unavailable (${e.message})`);
    }
  }

  async function start() {
    try {
      const answer = await getJson("/api/regions");
      const wanted = new URLSearchParams(location.search).get("region");
      const region = answer.regions.find((r) => r.name === wanted) || answer.regions[0];
      if (region && !new URLSearchParams(location.search).has("keep")) {
        map.fitBounds(region.bounds);
      }
    } catch (e) {
      text("route-info", `Regions unavailable (${e.message})`);
    }
    map.on("moveend", refreshTraffic);
    refreshTraffic();
    setInterval(refreshTraffic, 10000);
    state.ready = true;
  }

  state.search = search;
  state.routeBetween = (a, b) => route(L.latLng(a), L.latLng(b));
  state.refreshTraffic = refreshTraffic;
  start();
})();
