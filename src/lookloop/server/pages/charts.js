// The dashboard's charts, drawn by uPlot (vendor/uPlot.iife.min.js, loaded by the page before its modules).
// A canvas says nothing to a screen reader, so every chart also writes its numbers into a visually hidden table;
// the confusion matrix is an HTML table itself.
import { $ } from "./api.js";

const uPlot = window.uPlot;
export const COLORS = { a: "#2f6fdf", b: "#1f9d6b", c: "#e08a1e", d: "#d4473d", e: "#7a5af8", f: "#0fa5b8" };
const SOURCE_COLORS = ["#2f6fdf", "#7a5af8", "#e08a1e", "#0fa5b8", "#d4473d", "#1f9d6b"];
const INK = "#1d2433";
const MUTED = "#5d6679";
const FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';

// -- formatting -----------------------------------------------------------------------------------------------

export const isNum = (v) => typeof v === "number" && Number.isFinite(v);
export const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(v >= 0.995 || v === 0 ? 0 : 1) + "%");
export const secs = (v) => (v === null || v === undefined ? "–" : v < 60 ? v.toFixed(1) + " s"
  : v < 3600 ? (v / 60).toFixed(1) + " min" : (v / 3600).toFixed(1) + " h");
export const secAxis = (v) => (v < 60 ? (Number.isInteger(v) ? v : v.toFixed(1)) + " s"
  : v < 3600 ? +(v / 60).toFixed(1) + " min" : +(v / 3600).toFixed(1) + " h");
/** A round top for a time axis in the unit it is read in (seconds, minutes or hours), so its quarters are round too. */
export const timeMax = (v) => (v <= 60 ? niceMax(v) : v <= 3600 ? niceMax(v / 60) * 60 : niceMax(v / 3600) * 3600);
export const pctAxis = (v) => Math.round(v * 100) + "%";
export const pctFine = (v) => +(v * 100).toFixed(2) + "%"; // 5%, 2.5%, 0.75%: small rates without trailing zeros
export const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString());
export const plain = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 3 : 2).replace(/0+$/, "").replace(/\.$/, ""));
export const short = (label, n) => (label.length <= n ? label : label.slice(0, n - 1) + "…");

/** Below this many cases a figure may be chance: it is shown with a warning. */
export const MIN_SAMPLE = 30;
export const few = (n) => isNum(n) && n < MIN_SAMPLE;
/** "33% of 3 labels": a figure with what it rests on. */
export const ofN = (text, n, noun) => `${text} of ${num(n)} ${noun}`;

export function tickLabel(date, bucket) {
  if (bucket === "hour") return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toLocaleDateString([], { month: "short", day: "numeric" });
}

export function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Round ticks between lo and hi; with `whole`, whole numbers only (counts: 0, 1, 2 — never 0.25). */
function niceTicks(lo, hi, count, whole = false) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / Math.max(1, count);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((v) => v >= raw) || 10 * p;
  if (whole) step = step <= 1 ? 1 : step === 2.5 * p && p >= 1 ? 2 * p : Math.round(step);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(+v.toFixed(6));
  return ticks;
}

const quarters = (max) => [0, 1, 2, 3, 4].map((i) => (max * i) / 4);
/** A count axis: its top (a whole number at least `max`) and whole-number ticks from 0. */
export function countAxis(max) {
  const ticks = niceTicks(0, Math.max(1, max), 4, true);
  const top = ticks[ticks.length - 1] >= max ? ticks[ticks.length - 1] : ticks[ticks.length - 1] + (ticks[1] - ticks[0]);
  return { top, ticks: niceTicks(0, top, 4, true) };
}

// -- tooltip: one box for the page, beside the pointer --------------------------------------------------------

const pointer = { x: 0, y: 0 };
document.addEventListener("mousemove", (ev) => { pointer.x = ev.clientX; pointer.y = ev.clientY; }, true);

function tip(text) {
  const box = $("tooltip");
  box.hidden = text === null;
  if (text === null) return;
  box.textContent = text;
  box.style.left = pointer.x + 12 + "px";
  box.style.top = pointer.y + 12 + "px";
}

function hover(el, text) {
  el.addEventListener("mouseenter", () => tip(text()));
  el.addEventListener("mousemove", () => tip(text()));
  el.addEventListener("mouseleave", () => tip(null));
}

// -- pieces every chart uses ----------------------------------------------------------------------------------

const plots = new WeakMap(); // chart box → its uPlot instances, destroyed when the box is drawn again
const resized = new ResizeObserver((entries) => {
  for (const { target } of entries) {
    for (const u of plots.get(target) || []) {
      if (target.clientWidth && target.clientWidth !== u.width) u.setSize({ width: target.clientWidth, height: u.height });
    }
  }
});

/** Empties a chart box, its uPlot instances destroyed. */
export function clear(box) {
  for (const u of plots.get(box) || []) u.destroy();
  plots.delete(box);
  box.replaceChildren();
}

const AXIS = { stroke: MUTED, font: FONT, labelFont: "600 " + FONT, labelSize: 18, grid: { stroke: "#e3e7ee", width: 1 },
  ticks: { show: false }, gap: 4 };
const yAxis = (ticks, format, extra = {}) => ({ ...AXIS, size: 54, splits: () => ticks, values: (_, s) => s.map(format), ...extra });
const xAxis = (ticks, format, extra = {}) => ({
  ...AXIS, size: 24, grid: { show: false }, splits: () => ticks, values: (_, s) => s.map(format), ...extra,
});
const line = (label, color, extra = {}) => ({
  label, stroke: color, width: 2.2, points: { show: true, size: 7, width: 1.8, stroke: color, fill: "#fff" }, ...extra,
});

/**
 * One uPlot in `box`, as wide as the box, its tooltip the text `tipText(index)` of the point under the pointer (only
 * the chart under the pointer speaks: a chart whose cursor follows another's through `sync` has no event).
 */
function plot(box, { height, data, series, tipText, cursor = {}, hooks = {}, ...opts }) {
  const u = new uPlot({
    width: box.clientWidth || 560, height, legend: { show: false }, ...opts,
    series: [{}, ...series],
    cursor: { y: false, drag: { x: false, y: false, setScale: false }, ...cursor },
    hooks: {
      ...hooks, setCursor: [(self) => { if (self.cursor.event) tip(isNum(self.cursor.idx) ? tipText(self.cursor.idx) : null); }],
    },
  }, data, box);
  u.root.setAttribute("aria-hidden", "true"); // the hidden table below says it in words
  plots.set(box, [...(plots.get(box) || []), u]);
  resized.observe(box);
  return u;
}

function note(parent, text) {
  const el = document.createElement("div");
  el.className = "empty-note";
  el.textContent = text;
  parent.appendChild(el);
}

function legend(box, items) {
  const el = document.createElement("div");
  el.className = "legend";
  for (const s of items) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    if (s.dashed) { swatch.className = "dashed"; swatch.style.borderColor = s.color; } else swatch.style.background = s.color;
    item.append(swatch, s.label);
    el.appendChild(item);
  }
  box.appendChild(el);
}

/** The chart's numbers as a visually hidden table: `rows` of {cells: [text | {series, value, text}], data}. */
function describe(box, caption, head, rows) {
  const wrap = document.createElement("div");
  wrap.className = "sr-only"; // on the table itself, its rows would still take room
  const table = wrap.appendChild(document.createElement("table"));
  table.createCaption().textContent = caption;
  const top = table.createTHead().insertRow();
  for (const text of head) top.appendChild(Object.assign(document.createElement("th"), { textContent: text }));
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    Object.assign(tr.dataset, row.data || {});
    for (const cell of row.cells) {
      const td = tr.insertCell();
      if (typeof cell === "string") { td.textContent = cell; continue; }
      td.textContent = cell.text;
      td.dataset.series = cell.series;
      if (cell.value !== null && cell.value !== undefined) td.dataset.value = String(cell.value);
    }
  }
  box.appendChild(wrap);
}

// -- over time: lines and stacked bars, one slot per bucket ----------------------------------------------------

const slots = (n) => ({ time: false, range: () => [-0.5, Math.max(1, n) - 0.5] });
const every = (n, most) => [...Array(n).keys()].filter((i) => i % Math.max(1, Math.ceil(n / most)) === 0);
const value = (p, key) => (isNum(p[key]) ? p[key] : null);

/** Lines over buckets; a bucket without data leaves a gap rather than a misleading straight line across it. */
export function lineChart(box, pts, bucket, series, opts) {
  clear(box);
  const when = pts.map((p) => tickLabel(p.date, bucket));
  const values = series.map((s) => pts.map((p) => value(p, s.key)));
  const max = opts.max || (opts.nice || niceMax)(Math.max(0, ...values.flat().filter(isNum)) * 1.1);
  const say = (k, i) => opts.format(values[k][i]) + (values[k][i] === null ? "" : ` (n=${pts[i][series[k].n]})`);
  const u = plot(box, {
    height: 220, data: [pts.map((_, i) => i), ...values],
    scales: { x: slots(pts.length), y: { range: () => [0, max] } },
    axes: [xAxis(every(pts.length, 7), (i) => when[i]), yAxis(quarters(max), opts.axis || opts.format)],
    series: series.map((s) => line(s.label, s.color)),
    tipText: (i) => [when[i], ...series.map((s, k) => `${s.label}: ${say(k, i)}`)].join(" · "),
  });
  const drawn = values.filter((vs) => vs.some(isNum)).length;
  if (!drawn) note(u.over, "no data in this window yet");
  box.dataset.series = String(drawn);
  legend(box, series);
  describe(box, box.getAttribute("aria-label"), ["bucket", ...series.map((s) => s.label)], pts.map((p, i) => ({
    cells: [when[i], ...series.map((s, k) => ({ series: s.key, value: values[k][i], text: say(k, i) }))],
  })));
}

/** Labels spent per bucket, one bar segment per paid source (wearers' and imported labels are free). */
export function stackedBars(box, pts, bucket) {
  clear(box);
  const free = new Set(["import", "wearer"]);
  const sources = [...new Set(pts.flatMap((p) => Object.keys(p.labels_by_source || {})))].filter((s) => !free.has(s)).sort();
  const colors = sources.map((_, k) => SOURCE_COLORS[k % SOURCE_COLORS.length]);
  const counts = sources.map((s) => pts.map((p) => (p.labels_by_source || {})[s] || 0));
  const upTo = (k, i) => counts.slice(0, k + 1).reduce((a, c) => a + c[i], 0);
  const { top: max, ticks } = countAxis(Math.max(1, ...pts.map((_, i) => upTo(sources.length - 1, i))));
  const when = pts.map((p) => tickLabel(p.date, bucket));
  // uPlot does not stack: each source is a bar up to its running total, drawn tallest first so each shows above
  // the ones below it.
  const layers = counts.map((c, k) => c.map((v, i) => (v ? upTo(k, i) : null))).reverse();
  const bars = uPlot.paths.bars({ size: [0.7, 28], radius: 0.1 });
  const u = plot(box, {
    height: 220, data: [pts.map((_, i) => i), ...layers],
    scales: { x: slots(pts.length), y: { range: () => [0, max] } },
    axes: [xAxis(every(pts.length, 7), (i) => when[i]), yAxis(ticks, plain)],
    series: sources.map((s, k) => ({ label: s, fill: colors[k], stroke: colors[k], width: 0, paths: bars, points: { show: false } }))
      .reverse(),
    cursor: { points: { show: false } },
    tipText: (i) => [when[i], ...sources.map((s, k) => `${s}: ${counts[k][i]}`)].join(" · "),
  });
  const segments = counts.flat().filter(Boolean).length;
  if (!segments) note(u.over, "no labels spent in this window");
  box.dataset.bars = String(segments);
  box.dataset.ticks = ticks.join(",");
  legend(box, sources.map((s, k) => ({ label: s, color: colors[k] })));
  describe(box, box.getAttribute("aria-label"), ["bucket", ...sources], pts.map((_, i) => ({
    cells: [when[i], ...sources.map((s, k) => ({ series: s, value: counts[k][i] || null, text: String(counts[k][i]) }))],
  })));
}

const luminance = (rgb) => {
  const [r, g, b] = rgb.map((c) => { const x = c / 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const contrast = (a, b) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
/** Text colour for a cell of this background: the page's ink where it reads at 4.5:1, else white or black. */
function readableOn(rgb) {
  const bg = luminance(rgb);
  if (contrast(bg, luminance([29, 36, 51])) >= 4.5) return INK;
  return contrast(bg, 1) >= contrast(bg, 0) ? "#fff" : "#000";
}

/** The confusion matrix as a heat-map table: rows the label, columns the AI's guess. */
export function confusion(box, c) {
  clear(box);
  const k = c.classes.length;
  box.dataset.cells = String(k * k);
  if (!k) { note(box, "no labelled identify asks in this window"); return; }
  const peak = Math.max(1, ...c.matrix.flat());
  const table = document.createElement("table");
  table.className = "heatmap";
  table.style.setProperty("--cell", Math.round(1.2 * Math.max(18, Math.min(44, 520 / k))) + "px");
  const name = (text, scope) => {
    const th = Object.assign(document.createElement("th"), { scope, title: text });
    th.appendChild(document.createElement("span")).textContent = short(text, 18);
    return th;
  };
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement("td"));
  for (const label of c.classes) head.appendChild(name(label, "col"));
  const body = table.createTBody();
  c.matrix.forEach((row, i) => {
    const tr = body.insertRow();
    tr.appendChild(name(c.classes[i], "row"));
    row.forEach((v, j) => {
      const td = tr.insertCell();
      const share = v / peak;
      td.className = "cell";
      td.textContent = v ? String(v) : "";
      const [rgb, alpha] = v === 0 ? [[246, 248, 251], 1] : i === j ? [[31, 157, 107], 0.18 + 0.82 * share]
        : [[212, 71, 61], 0.15 + 0.85 * share];
      td.style.background = `rgba(${rgb.join(",")},${alpha})`;
      td.style.color = readableOn(rgb.map((x) => alpha * x + (1 - alpha) * 255)); // the card is white beneath
      hover(td, () => `label ${c.classes[i]} · guessed ${c.classes[j]}: ${v}`);
    });
  });
  box.appendChild(table);
}

// -- the learning loop ----------------------------------------------------------------------------------------

const LOOP_SERIES = [
  { key: "accuracy", label: "held-out accuracy", tip: "accuracy", color: COLORS.a },
  { key: "coverage", label: "held-out coverage (share answered without a person)", tip: "coverage", color: COLORS.b },
  { key: "auto_error", label: "auto-answer error", tip: "auto error", color: COLORS.d, lower: true },
];

/** Each model version by labels seen: accuracy and coverage above, the small auto-answer error (and α) below. */
export function loopChart(box, versions, policy) {
  clear(box);
  const byX = versions.map((v, i) => ({ ...v, order: i, x: isNum(v.labels) ? v.labels : 0 }))
    .sort((a, b) => a.x - b.x || a.order - b.order);
  const xs = byX.map((v) => v.x);
  const pad = xs[xs.length - 1] > xs[0] ? (xs[xs.length - 1] - xs[0]) * 0.06 : Math.max(1, xs[0] * 0.1);
  const lo = Math.max(0, xs[0] - pad);
  const hi = xs[xs.length - 1] + pad;
  const alpha = isNum(policy.alpha) ? policy.alpha : null;
  const emax = niceMax(Math.max(0.02, ...byX.map((v) => v.auto_error).filter(isNum), alpha || 0) * 1.25);
  const col = (key) => byX.map((v) => (isNum(v[key]) ? v[key] : null));
  const desc = (v) => [`${v.id}${v.kind ? " (" + v.kind + ")" : ""}`, `${num(v.labels)} labels`]
    .concat(LOOP_SERIES.filter((s) => isNum(v[s.key])).map((s) => `${s.tip} ${pct(v[s.key])}`))
    .concat(v.serving ? ["serving"] : [], LOOP_SERIES.some((s) => isNum(v[s.key])) ? [] : ["no held-out metrics"])
    .join(" · ");
  const serving = byX.find((v) => v.serving);
  const ticks = niceTicks(lo, hi, 6, true); // labels seen: a count
  const pane = (series, upper) => ({
    data: [xs, ...series.map((s) => (s.key ? col(s.key) : xs.map(() => alpha)))],
    series: series.map((s) => (s.key ? line(s.label, s.color)
      : { label: s.label, stroke: INK, width: 1.4, dash: [5, 4], points: { show: false } })),
    scales: { x: { time: false, range: () => [lo, hi] }, y: { range: () => (upper ? [0, 1] : [0, emax]) } },
    padding: [upper ? 24 : 14, 64, 0, 0],
    cursor: { sync: { key: "lookloop-loop" } },
    tipText: (i) => desc(byX[i]),
    hooks: { draw: [(u) => marks(u, series, upper)] },
  });
  // What a line of points cannot say: the serving version (a dotted rule, its points filled), α's value, and
  // versions without held-out metrics (a bare mark on the axis).
  const marks = (u, series, upper) => {
    const { ctx, bbox } = u;
    const r = uPlot.pxRatio;
    ctx.save();
    ctx.font = `600 ${11 * r}px system-ui, sans-serif`;
    if (serving) {
      const x = u.valToPos(serving.x, "x", true);
      ctx.strokeStyle = COLORS.a;
      ctx.globalAlpha = 0.7;
      ctx.setLineDash([2 * r, 3 * r]);
      ctx.beginPath();
      ctx.moveTo(x, bbox.top - (upper ? 4 * r : 0));
      ctx.lineTo(x, bbox.top + bbox.height);
      ctx.stroke();
      ctx.globalAlpha = 1;
      if (upper) { ctx.fillStyle = COLORS.a; ctx.textAlign = "center"; ctx.fillText("serving", x, bbox.top - 8 * r); }
      series.forEach((s, k) => {
        const v = u.data[k + 1][byX.indexOf(serving)];
        if (!s.key || v === null) return;
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.arc(x, u.valToPos(v, "y", true), 5 * r, 0, 2 * Math.PI);
        ctx.fill();
      });
    }
    if (!upper && alpha !== null) {
      ctx.fillStyle = INK;
      ctx.textAlign = "left";
      ctx.fillText(`α ${pctFine(alpha)}`, bbox.left + bbox.width + 6 * r, u.valToPos(alpha, "y", true) + 4 * r);
    }
    ctx.setLineDash([]);
    for (const v of upper ? [] : byX.filter((v) => !LOOP_SERIES.some((s) => isNum(v[s.key])))) {
      ctx.fillStyle = "#fff";
      ctx.strokeStyle = MUTED;
      ctx.lineWidth = 1.6 * r;
      ctx.beginPath();
      ctx.arc(u.valToPos(v.x, "x", true), bbox.top + bbox.height, 3.5 * r, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }
    ctx.restore();
  };
  const axisLeft = { size: 54, labelSize: 18 };
  plot(box, { height: 196, ...pane(LOOP_SERIES.slice(0, 2), true),
    axes: [xAxis(ticks, () => "", { size: 6 }), yAxis(quarters(1), pctAxis, { label: "accuracy · coverage", ...axisLeft })] });
  const alphaSeries = alpha === null ? [] : [{ label: `policy α (${pctFine(alpha)})` }];
  plot(box, { height: 150, ...pane([LOOP_SERIES[2], ...alphaSeries], false),
    axes: [xAxis(ticks, num, { label: "labels seen" }), yAxis([0, emax / 2, emax], pctFine, { label: "auto error", ...axisLeft })] });

  box.dataset.points = String(byX.length);
  box.dataset.series = String(LOOP_SERIES.filter((s) => byX.some((v) => isNum(v[s.key]))).length);
  if (alpha !== null) box.dataset.alpha = String(alpha);
  else delete box.dataset.alpha;
  const items = LOOP_SERIES.map((s) => ({ label: s.label, color: s.color }));
  if (alpha !== null) items.push({ label: `policy α (${pctFine(alpha)})`, color: INK, dashed: true });
  legend(box, items);
  const n = versions.length;
  const head = alpha !== null ? `, against the policy's α of ${pctFine(alpha)}` : "";
  const caption = `Learning loop: accuracy, coverage and auto-answer error of ${n} model version${n === 1 ? "" : "s"}`;
  describe(box, `${caption} by labels seen${head}`,
    ["version", "labels seen", ...LOOP_SERIES.map((s) => s.tip)],
    byX.map((v) => ({
      data: { version: v.id, labels: String(v.x), ...(v.serving ? { serving: "true" } : {}) },
      cells: [desc(v), num(v.labels),
        ...LOOP_SERIES.map((s) => ({ series: s.key, value: isNum(v[s.key]) ? v[s.key] : null, text: pct(v[s.key]) }))],
    })));
}

/** Live coverage by day; a day without identify asks breaks the line rather than bridging it. */
export function loopDays(box, days) {
  clear(box);
  const DAY = 86400;
  const pts = days.filter((d) => isNum(d.coverage)).map((d) => ({ ...d, date: new Date(d.day + "T00:00:00") }));
  const xs = [];
  const ys = [];
  pts.forEach((p, i) => {
    const t = p.date.getTime() / 1000;
    if (i && t - xs[xs.length - 1] > 1.5 * DAY) { xs.push(t - DAY); ys.push(null); }
    xs.push(t);
    ys.push(p.coverage);
  });
  const t0 = xs.length ? xs[0] : 0;
  const t1 = xs.length ? xs[xs.length - 1] : DAY;
  const span = t1 > t0 ? (t1 - t0) * 0.04 : DAY / 2;
  const at = new Map(pts.map((p) => [p.date.getTime() / 1000, p]));
  const label = (t) => tickLabel(new Date(t * 1000), "day");
  const u = plot(box, {
    height: 220, data: [xs, ys],
    scales: { x: { time: false, range: () => [t0 - span, t1 + span] }, y: { range: () => [0, 1] } },
    axes: [xAxis(every(pts.length, 5).map((i) => pts[i].date.getTime() / 1000), label), yAxis(quarters(1), pctAxis, { size: 44 })],
    series: [line("coverage", COLORS.b,
      { width: 2, points: { show: true, size: pts.length > 40 ? 4 : 6, width: 1.6, stroke: COLORS.b, fill: "#fff" } })],
    tipText: (i) => {
      const p = at.get(xs[i]);
      if (!p) return null;
      return `${label(xs[i])} · coverage ${pct(p.coverage)} (${num(p.answered)} of ${num(p.asks)} asks answered without a person)`;
    },
  });
  if (!pts.length) note(u.over, "no asks yet");
  box.dataset.points = String(pts.length);
  describe(box, `Coverage by day over ${pts.length} day${pts.length === 1 ? "" : "s"}: the share of asks the AI answered `
    + "without a person", ["day", "coverage"],
    pts.map((p) => ({ data: { day: p.day }, cells: [p.day, { series: "coverage", value: p.coverage,
      text: `${pct(p.coverage)} of ${num(p.asks)} asks` }] })));
}
