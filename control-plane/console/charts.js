// Telemetry charts with uPlot: one small chart per field, x in seconds.

import uPlot from './vendor/uplot/uPlot.esm.js';
import {h} from './dom.js';

/** Points a chart aims at: the data API downsamples to about this many. */
export const TARGET_POINTS = 300;

/**
 * The ds_interval (e.g. "5m") that gives about TARGET_POINTS buckets over
 * `seconds`, rounded up to a whole unit; null when the range is short
 * enough to read raw.
 */
export function downsampleInterval(seconds) {
  const per = seconds / TARGET_POINTS;
  if (per < 60) return null;
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]]) {
    if (per >= size) return `${Math.ceil(per / size)}${unit}`;
  }
  return null;
}

/**
 * [[value, time], ...] (the data API's form) as uPlot columns
 * [[x seconds...], [y...]], sorted by time; nulls stay as gaps.
 */
export function columns(rows) {
  const pts = (rows || [])
    .map(([v, t]) => [Date.parse(t) / 1000, v === null ? null : Number(v)])
    .filter(([x]) => Number.isFinite(x))
    .sort((a, b) => a[0] - b[0]);
  return [pts.map((p) => p[0]), pts.map((p) => p[1])];
}

/**
 * A titled chart of `cols`; the container carries data-points (the
 * plotted non-null values) so tests and people can see what was drawn.
 */
export function chart(title, unit, cols, {color = '#1f6feb', width = 520, height = 180, testid} = {}) {
  const points = cols[1].filter((v) => v !== null && Number.isFinite(v)).length;
  const box = h('figure', {class: 'chart', 'data-testid': testid, 'data-points': points},
    h('figcaption', {}, title, unit ? ` (${unit})` : '', h('span', {class: 'muted'}, ` ${points} points`)));
  if (!points) {
    box.append(h('p', {class: 'muted empty-chart'}, 'No data in this range.'));
    return box;
  }
  const opts = {
    width, height,
    legend: {show: true},
    scales: {x: {time: true}},
    series: [{}, {label: title, stroke: color, width: 1.5, points: {show: points < 60}, spanGaps: true}],
    axes: [{}, {size: 56}],
  };
  // uPlot measures its container, so draw once it is in the document.
  requestAnimationFrame(() => {
    const plot = new uPlot(opts, cols, box);
    // What uPlot holds to draw: the non-null values of the series.
    box.dataset.rendered = String(plot.data[1].filter((v) => v !== null && v !== undefined).length);
  });
  return box;
}
