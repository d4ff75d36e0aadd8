// The fleet map: Leaflet over the configured tile server, or, with no
// tile server, a plain SVG plot of latitude/longitude (no internet here).

import {h} from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

/** Units with usable coordinates: [{unit, lat, lon}]. */
export function located(units) {
  return units
    .map((u) => ({unit: u, lat: Number.parseFloat(u.latitude), lon: Number.parseFloat(u.longitude)}))
    .filter((p) => Number.isFinite(p.lat) && Number.isFinite(p.lon) && Math.abs(p.lat) <= 90 && Math.abs(p.lon) <= 180);
}

/** A marker colour: alerts red, disabled grey, enabled green. */
export function colourOf(unit) {
  if ((unit.alerts || []).length) return '#d1242f';
  return unit.current_enable_flag ? '#1a7f37' : '#6e7781';
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

/** Nice tick values between lo and hi. */
function ticks(lo, hi, count = 5) {
  const span = hi - lo || 1;
  const step = 10 ** Math.floor(Math.log10(span / count));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= count) || step * 10;
  const out = [];
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(+v.toFixed(6));
  return out;
}

/** An SVG scatter of the points (equirectangular), each linking to its unit. */
function coordinatePlot(points, onPick) {
  const W = 900, H = 420, pad = 44;
  const lats = points.map((p) => p.lat), lons = points.map((p) => p.lon);
  let [minLat, maxLat, minLon, maxLon] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  const grow = (lo, hi) => (hi - lo < 0.02 ? [lo - 0.01, hi + 0.01] : [lo - (hi - lo) * 0.05, hi + (hi - lo) * 0.05]);
  [minLat, maxLat] = grow(minLat, maxLat);
  [minLon, maxLon] = grow(minLon, maxLon);
  const x = (lon) => pad + ((lon - minLon) / (maxLon - minLon)) * (W - 2 * pad);
  const y = (lat) => H - pad - ((lat - minLat) / (maxLat - minLat)) * (H - 2 * pad);
  const plot = svg('svg', {viewBox: `0 0 ${W} ${H}`, class: 'coord-plot', 'data-testid': 'coordinate-plot', role: 'img'});
  plot.append(svg('rect', {x: pad, y: pad, width: W - 2 * pad, height: H - 2 * pad, class: 'frame'}));
  for (const t of ticks(minLon, maxLon)) {
    plot.append(svg('line', {x1: x(t), x2: x(t), y1: pad, y2: H - pad, class: 'gridline'}),
      svg('text', {x: x(t), y: H - pad + 16, 'text-anchor': 'middle'}, `${t}°`));
  }
  for (const t of ticks(minLat, maxLat)) {
    plot.append(svg('line', {x1: pad, x2: W - pad, y1: y(t), y2: y(t), class: 'gridline'}),
      svg('text', {x: pad - 6, y: y(t) + 4, 'text-anchor': 'end'}, `${t}°`));
  }
  plot.append(svg('text', {x: W / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis'}, 'longitude'),
    svg('text', {x: 12, y: H / 2, transform: `rotate(-90 12 ${H / 2})`, 'text-anchor': 'middle', class: 'axis'}, 'latitude'));
  for (const p of points) {
    const dot = svg('circle', {cx: x(p.lon), cy: y(p.lat), r: 6, fill: colourOf(p.unit), class: 'unit-dot', 'data-imei': p.unit.product_imei},
      svg('title', {}, `${p.unit.product_imei} (${p.lat}, ${p.lon})`));
    dot.addEventListener('click', () => onPick(p.unit));
    plot.append(dot);
  }
  return h('div', {class: 'map-box'}, plot,
    h('p', {class: 'muted'}, 'No map tile server is configured (SMARTSOLAR_CONSOLE_TILE_URL): units are plotted by coordinates.'));
}

/** Leaflet with the configured tiles; loaded only when a tile URL is set. */
async function tileMap(points, settings, onPick) {
  const L = await import('./vendor/leaflet/leaflet-src.esm.js');
  const el = h('div', {class: 'leaflet-map', 'data-testid': 'tile-map'});
  requestAnimationFrame(() => {
    const map = L.map(el);
    L.tileLayer(settings.tile_url, {maxZoom: 19, attribution: settings.tile_attribution || ''}).addTo(map);
    const markers = points.map((p) => L.circleMarker([p.lat, p.lon], {radius: 6, color: colourOf(p.unit), fillOpacity: 0.8})
      .bindTooltip(h('span', {}, p.unit.product_imei)).on('click', () => onPick(p.unit)).addTo(map));
    if (markers.length) map.fitBounds(L.featureGroup(markers).getBounds().pad(0.1), {maxZoom: 14});
    else map.setView([0, 0], 2);
  });
  return el;
}

/** The map (or plot) of `units`; `onPick(unit)` on a click. */
export async function fleetMap(units, settings, onPick) {
  const points = located(units);
  if (settings.tile_url) return tileMap(points, settings, onPick);
  if (!points.length) return h('p', {class: 'muted', 'data-testid': 'coordinate-plot-empty'}, 'No unit in this selection has a location yet.');
  return coordinatePlot(points, onPick);
}
