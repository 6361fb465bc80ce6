/* lookloop operator dashboard: plain JS + SVG, data from /v1/operators/summary and /v1/operators/loop. */
import { $, apiClient, signInForm, SignedOut } from "./api.js";

const COLORS = { a: "#2f6fdf", b: "#1f9d6b", c: "#e08a1e", d: "#d4473d", e: "#7a5af8", f: "#0fa5b8" };
const SOURCE_COLORS = ["#2f6fdf", "#7a5af8", "#e08a1e", "#0fa5b8", "#d4473d", "#1f9d6b"];
const SVG_NS = "http://www.w3.org/2000/svg";

const client = apiClient({ tokenKey: "lookloop.operator.token", onSignedOut: showLogin });
const api = (path, options) => client.api(path, options);
const state = { data: null, loop: null };

// -- sign-in --------------------------------------------------------------------------------------------------

function showLogin(message) {
  $("login").hidden = false;
  $("board").hidden = true;
  $("controls").hidden = true;
  $("login-error").textContent = message || "";
  $("username").focus();
}

signInForm(client, {
  roles: ["operator"],
  onSignedIn: (account) => {
    $("who").textContent = account.username || $("username").value.trim();
    start();
  },
});

$("logout").addEventListener("click", async () => {
  await client.signOut();
  showLogin("");
});

// -- loading --------------------------------------------------------------------------------------------------

function windowParam() { return $("window").value; }

async function load() {
  $("status").textContent = "Loading…";
  const since = windowParam();
  $("report").href = "/v1/operators/plots/overview.png?since=" + encodeURIComponent(since);
  // The learning loop is not windowed: it loads beside the summary, and its failure leaves the rest drawn.
  const loop = loadLoop();
  try {
    const data = await api("/v1/operators/summary?since=" + encodeURIComponent(since));
    state.data = data;
    render(data);
    const at = new Date().toLocaleTimeString();
    $("status").textContent = `Updated ${at} · ${data.metrics.totals.asks} asks in the window, bucketed by ${data.metrics.bucket}`;
    await loop;
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (!(err instanceof SignedOut)) $("status").textContent = "Could not load the metrics: " + err.message;
  }
}

async function loadLoop() {
  const box = $("loop");
  box.setAttribute("aria-busy", "true");
  try {
    const data = await api("/v1/operators/loop");
    state.loop = data;
    renderLoop(data);
  } catch (err) {
    if (!(err instanceof SignedOut)) loopFailed("Could not load the learning loop: " + err.message);
  } finally {
    box.removeAttribute("aria-busy");
  }
}

function start() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("controls").hidden = false;
  if (!$("who").textContent) {
    api("/v1/auth/me").then((me) => { $("who").textContent = me.name; }).catch(() => {});
  }
  load();
}

$("refresh").addEventListener("click", load);
$("window").addEventListener("change", load);
document.addEventListener("keydown", (ev) => {
  if (ev.key === "r" && !$("board").hidden && !(ev.target instanceof HTMLInputElement)) load();
});

// -- formatting -----------------------------------------------------------------------------------------------

const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(v >= 0.995 || v === 0 ? 0 : 1) + "%");
const secs = (v) => (v === null || v === undefined ? "–" : v < 60 ? v.toFixed(1) + " s" : (v / 60).toFixed(1) + " min");
const secAxis = (v) => (v < 60 ? (Number.isInteger(v) ? v : v.toFixed(1)) + " s" : +(v / 60).toFixed(1) + " min");
const pctAxis = (v) => Math.round(v * 100) + "%";
const pctFine = (v) => +(v * 100).toFixed(2) + "%"; // 5%, 2.5%, 0.75%: small rates without trailing zeros
const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString());

function tickLabel(date, bucket) {
  if (bucket === "hour") return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toLocaleDateString([], { month: "short", day: "numeric" });
}

// -- rendering ------------------------------------------------------------------------------------------------

function render(data) {
  const m = data.metrics;
  renderKpis(m.totals, data.queue || {});
  const pts = m.points.map((p) => Object.assign({}, p, { date: new Date(p.start) }));
  lineChart($("chart-accuracy"), pts, m.bucket, [
    { key: "accuracy", label: "all labelled asks", color: COLORS.a, n: "labelled" },
    { key: "auto_accuracy", label: "answered without a human", color: COLORS.b, n: "auto_labelled" },
  ], { max: 1, format: pct, axis: pctAxis });
  lineChart($("chart-coverage"), pts, m.bucket, [
    { key: "coverage", label: "coverage (no human)", color: COLORS.b, n: "asks" },
    { key: "escalation_rate", label: "escalation rate", color: COLORS.c, n: "asks" },
  ], { max: 1, format: pct, axis: pctAxis });
  lineChart($("chart-answer-time"), pts, m.bucket, [
    { key: "human_answer_p50_s", label: "p50", color: COLORS.e, n: "human_answered" },
    { key: "human_answer_p95_s", label: "p95", color: COLORS.d, n: "human_answered" },
  ], { format: secs, axis: secAxis });
  stackedBars($("chart-labels"), pts, m.bucket);
  confusion($("chart-confusion"), m.confusion);
  perClass($("per-class"), m.confusion);
  reviewers($("reviewers"), data.reviewers || []);
  models($("models"), data.models);
}

function renderKpis(t, queue) {
  const tiles = [
    ["Asks", num(t.asks), `${num(t.ai_answered)} by the AI alone`],
    ["Coverage", pct(t.coverage), "answered without a human"],
    ["Escalation rate", pct(t.escalation_rate), `${num(t.escalated)} escalated`],
    ["Accuracy", pct(t.accuracy), `${num(t.labelled)} labelled · auto ${pct(t.auto_accuracy)}`],
    ["Human answer time", secs(t.human_answer_p50_s), `p95 ${secs(t.human_answer_p95_s)}`],
    ["Labels spent", num(t.labels_spent), Object.entries(t.labels_by_source || {})
      .map(([k, v]) => `${k} ${v}${k === "wearer" ? " (free)" : ""}`).join(" · ") || "none"],
    ["Queue", num(queue.open), `${num(queue.live)} live · ${num(queue.operator)} for operators`],
  ];
  const box = $("kpis");
  box.replaceChildren();
  for (const [label, value, sub] of tiles) {
    const el = document.createElement("div");
    el.className = "kpi";
    el.dataset.kpi = label;
    el.innerHTML = '<div class="label"></div><div class="value"></div><div class="sub"></div>';
    el.querySelector(".label").textContent = label;
    el.querySelector(".value").textContent = value;
    el.querySelector(".sub").textContent = sub;
    box.appendChild(el);
  }
}

function svgEl(name, attrs, parent) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function frame(container, width, height, pad) {
  container.replaceChildren();
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" }, container);
  return { svg, x0: pad.l, x1: width - pad.r, y0: height - pad.b, y1: pad.t };
}

function axes(f, pts, bucket, max, format) {
  const { svg, x0, x1, y0, y1 } = f;
  const g = svgEl("g", { class: "axis" }, svg);
  for (let i = 0; i <= 4; i++) {
    const y = y0 - ((y0 - y1) * i) / 4;
    svgEl("line", { x1: x0, x2: x1, y1: y, y2: y, class: "grid-line" }, g);
    const t = svgEl("text", { x: x0 - 6, y: y + 4, "text-anchor": "end" }, g);
    t.textContent = format((max * i) / 4);
  }
  const n = pts.length;
  const every = Math.max(1, Math.ceil(n / 7));
  pts.forEach((p, i) => {
    if (i % every !== 0) return;
    const x = xAt(f, i, n);
    const t = svgEl("text", { x, y: y0 + 16, "text-anchor": "middle" }, g);
    t.textContent = tickLabel(p.date, bucket);
  });
}

function xAt(f, i, n) {
  return n <= 1 ? (f.x0 + f.x1) / 2 : f.x0 + ((f.x1 - f.x0) * i) / (n - 1);
}

function legend(container, series) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    item.innerHTML = s.dashed ? `<i class="dashed" style="border-color:${s.color}"></i>` : `<i style="background:${s.color}"></i>`;
    item.appendChild(document.createTextNode(s.label));
    box.appendChild(item);
  }
  container.appendChild(box);
}

function emptyNote(f, text) {
  const t = svgEl("text", { x: (f.x0 + f.x1) / 2, y: (f.y0 + f.y1) / 2, "text-anchor": "middle", class: "empty" }, f.svg);
  t.textContent = text;
}

function lineChart(container, pts, bucket, series, opts) {
  const f = frame(container, 560, 230, { l: 52, r: 14, t: 12, b: 26 });
  const values = pts.flatMap((p) => series.map((s) => p[s.key])).filter((v) => v !== null && v !== undefined);
  const max = opts.max || niceMax(Math.max(0, ...values) * 1.1);
  axes(f, pts, bucket, max, opts.axis || opts.format);
  const n = pts.length;
  const yAt = (v) => f.y0 - ((f.y0 - f.y1) * Math.min(v, max)) / max;
  let drawn = 0;
  for (const s of series) {
    // Buckets without data leave gaps rather than a misleading straight line across them.
    let d = "";
    let pen = false;
    pts.forEach((p, i) => {
      const v = p[s.key];
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? "L" : "M"}${xAt(f, i, n).toFixed(1)},${yAt(v).toFixed(1)}`;
      pen = true;
    });
    if (d) {
      svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": 2.2, "stroke-linejoin": "round", class: "series", "data-series": s.key }, f.svg);
      drawn++;
    }
    pts.forEach((p, i) => {
      const v = p[s.key];
      if (v === null || v === undefined) return;
      const dot = svgEl("circle", { cx: xAt(f, i, n), cy: yAt(v), r: 3, fill: "#fff", stroke: s.color, "stroke-width": 1.8, class: "point" }, f.svg);
      hover(dot, () => `${tickLabel(p.date, bucket)} · ${s.label}: ${opts.format(v)} (n=${p[s.n]})`);
    });
  }
  if (!drawn) emptyNote(f, "no data in this window yet");
  container.dataset.series = String(drawn);
  legend(container, series);
}

function stackedBars(container, pts, bucket) {
  const free = new Set(["import", "wearer"]);
  const sources = [...new Set(pts.flatMap((p) => Object.keys(p.labels_by_source || {})))].filter((s) => !free.has(s)).sort();
  const f = frame(container, 560, 230, { l: 52, r: 14, t: 12, b: 26 });
  const totals = pts.map((p) => sources.reduce((a, s) => a + ((p.labels_by_source || {})[s] || 0), 0));
  const max = niceMax(Math.max(1, ...totals));
  axes(f, pts, bucket, max, (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)));
  const n = pts.length;
  const slot = (f.x1 - f.x0) / Math.max(1, n - 1 || 1);
  const w = Math.max(3, Math.min(28, slot * 0.7));
  let bars = 0;
  pts.forEach((p, i) => {
    let y = f.y0;
    sources.forEach((s, k) => {
      const v = (p.labels_by_source || {})[s] || 0;
      if (!v) return;
      const h = ((f.y0 - f.y1) * v) / max;
      const rect = svgEl("rect", { x: xAt(f, i, n) - w / 2, y: y - h, width: w, height: h, rx: 2, fill: SOURCE_COLORS[k % SOURCE_COLORS.length], class: "segment" }, f.svg);
      hover(rect, () => `${tickLabel(p.date, bucket)} · ${s}: ${v}`);
      y -= h;
      bars++;
    });
  });
  if (!bars) emptyNote(f, "no labels spent in this window");
  container.dataset.bars = String(bars);
  legend(container, sources.map((s, k) => ({ label: s, color: SOURCE_COLORS[k % SOURCE_COLORS.length] })));
}

function short(label, n) {
  return label.length <= n ? label : label.slice(0, n - 1) + "…";
}

function confusion(container, c) {
  const k = c.classes.length;
  if (!k) {
    const f = frame(container, 560, 120, { l: 0, r: 0, t: 0, b: 0 });
    emptyNote(f, "no labelled identify asks in this window");
    container.dataset.cells = "0";
    return;
  }
  const labelW = 130;
  const cell = Math.max(18, Math.min(44, 520 / k));
  const top = 112;
  const width = labelW + cell * k + 10;
  const height = top + cell * k + 10;
  const f = frame(container, width, height, { l: 0, r: 0, t: 0, b: 0 });
  // Drawn at its natural size (scaled up a little), never stretched across the card.
  f.svg.style.width = Math.round(width * 1.2) + "px";
  f.svg.style.maxWidth = "100%";
  const peak = Math.max(1, ...c.matrix.flat());
  let cells = 0;
  c.classes.forEach((name, i) => {
    const t = svgEl("text", { x: labelW - 6, y: top + cell * i + cell / 2 + 4, "text-anchor": "end", class: "tick" }, f.svg);
    t.textContent = short(name, 18);
    const cx = labelW + cell * i + cell / 2;
    const ct = svgEl("text", { x: cx, y: top - 6, transform: `rotate(-55 ${cx} ${top - 6})`, class: "tick" }, f.svg);
    ct.textContent = short(name, 18);
  });
  c.matrix.forEach((row, i) => {
    row.forEach((v, j) => {
      const share = v / peak;
      const diag = i === j;
      const fill = v === 0 ? "#f6f8fb" : diag ? `rgba(31,157,107,${0.18 + 0.82 * share})` : `rgba(212,71,61,${0.15 + 0.85 * share})`;
      const rect = svgEl("rect", { x: labelW + cell * j + 1, y: top + cell * i + 1, width: cell - 2, height: cell - 2, rx: 3, fill, class: "cell" }, f.svg);
      hover(rect, () => `label ${c.classes[i]} · guessed ${c.classes[j]}: ${v}`);
      if (v) {
        const t = svgEl("text", { x: labelW + cell * j + cell / 2, y: top + cell * i + cell / 2 + 4, "text-anchor": "middle", "font-size": Math.min(12, cell / 2.4), fill: share > 0.55 ? "#fff" : "#1d2433" }, f.svg);
        t.textContent = String(v);
      }
      cells++;
    });
  });
  container.dataset.cells = String(cells);
}

function table(el, head, rows) {
  el.replaceChildren();
  const thead = el.createTHead().insertRow();
  for (const [text, cls] of head) {
    const th = document.createElement("th");
    th.textContent = text;
    if (cls) th.className = cls;
    thead.appendChild(th);
  }
  const body = el.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    for (const [content, cls] of r.cells) {
      const td = tr.insertCell();
      if (cls) td.className = cls;
      if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    }
    if (r.className) tr.className = r.className;
  }
  return body;
}

function perClass(el, c) {
  const rows = c.per_class.map((x) => ({ cells: [[x.label], [num(x.support), "num"], [pct(x.recall), "num"], [pct(x.precision), "num"]] }));
  table(el, [["class"], ["n", "num"], ["recall", "num"], ["precision", "num"]], rows);
}

function reviewers(el, list) {
  if (!list.length) {
    table(el, [["No reviewer has answered yet."]], []);
    return;
  }
  const slowest = Math.max(1, ...list.map((r) => r.seconds_per_item || 0));
  const rows = list.map((r) => {
    const cellBox = document.createElement("span");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(60 * (r.seconds_per_item || 0) / slowest) + "px";
    cellBox.append(bar, document.createTextNode(" " + secs(r.seconds_per_item)));
    return {
      cells: [[r.username || r.account_id], [num(r.items), "num"], [num(r.skips), "num"], [cellBox, "num"],
        [pct(r.agreement), "num"], [r.gold_answered ? `${pct(r.gold_accuracy)} of ${r.gold_answered}` : "–", "num"]],
    };
  });
  table(el, [["reviewer"], ["items", "num"], ["skips", "num"], ["time / item", "num"], ["agreement", "num"], ["gold", "num"]], rows);
}

function models(el, info) {
  const note = $("models-note");
  note.textContent = info.actions
    ? "Promote serves a version now (if it passes the evaluation gate); roll back returns to the one served before."
    : info.registry
      ? "Versions from the model registry (read-only here: promote and roll back with the loop's CLI)."
      : "No model registry is installed: only the serving version is shown.";
  const rows = info.versions.map((v) => {
    const actions = document.createElement("span");
    if (v.serving) {
      const pill = document.createElement("span");
      pill.className = "pill";
      pill.textContent = "serving";
      actions.appendChild(pill);
    } else {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "small secondary";
      b.textContent = "Promote";
      b.disabled = !info.actions;
      b.addEventListener("click", () => modelAction(`/v1/operators/models/${encodeURIComponent(v.version)}/promote`, `Promote ${v.version}?`));
      actions.appendChild(b);
    }
    const m = Object.entries(v.metrics || {}).filter(([, x]) => typeof x !== "object").slice(0, 3).map(([k, x]) => `${k} ${typeof x === "number" && x <= 1 ? pct(x) : x}`).join(" · ");
    return {
      className: v.serving ? "serving" : "",
      cells: [[short(v.version, 42)], [v.created_at ? new Date(v.created_at).toLocaleString() : "–"], [m || "–"], [actions]],
    };
  });
  const body = table(el, [["version"], ["created"], ["metrics"], [""]], rows);
  const tr = body.insertRow();
  const td = tr.insertCell();
  td.colSpan = 4;
  const rb = document.createElement("button");
  rb.type = "button";
  rb.className = "small secondary";
  rb.id = "rollback";
  rb.textContent = "Roll back to the previous version";
  rb.disabled = !info.actions;
  rb.addEventListener("click", () => modelAction("/v1/operators/models/rollback", "Roll back the serving model?"));
  td.appendChild(rb);
}

async function modelAction(path, question) {
  if (!window.confirm(question)) return;
  try {
    const out = await api(path, { method: "POST" });
    models($("models"), out);
    $("status").textContent = "Now serving " + out.serving;
    loadLoop(); // the serving mark and the policy follow the promotion
  } catch (err) {
    if (!(err instanceof SignedOut)) $("status").textContent = "Model change failed: " + err.message;
  }
}

// -- learning loop --------------------------------------------------------------------------------------------

const LOOP_SERIES = [
  { key: "accuracy", label: "held-out accuracy", tip: "accuracy", color: COLORS.a },
  { key: "coverage", label: "coverage (answered without a human)", tip: "coverage", color: COLORS.b },
  { key: "auto_error", label: "auto-answer error", tip: "auto error", color: COLORS.d, lower: true },
];
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const plain = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(v < 1 ? 3 : 2).replace(/0+$/, "").replace(/\.$/, ""));

function renderLoop(data) {
  const versions = (data.versions || []).slice();
  $("loop").dataset.versions = String(versions.length);
  loopPolicy($("loop-policy"), data);
  if (versions.length) loopChart($("chart-loop"), versions, data.policy || {});
  else loopEmpty($("chart-loop"));
  loopDays($("chart-loop-days"), data.by_day || []);
}

function loopFailed(message) {
  $("loop").dataset.versions = "";
  $("loop-policy").textContent = message;
  $("chart-loop").replaceChildren();
  $("chart-loop-days").replaceChildren();
}

function fact(box, name, label, value, title) {
  const el = document.createElement("span");
  el.className = "fact";
  el.dataset.fact = name;
  if (title) el.title = title;
  const k = document.createElement("span");
  k.className = "muted";
  k.textContent = label + " ";
  el.append(k, document.createTextNode(value));
  box.appendChild(el);
}

function loopPolicy(box, data) {
  box.replaceChildren();
  const p = data.policy || {};
  fact(box, "policy", "policy", p.policy || "–");
  if (isNum(p.threshold)) {
    const score = p.score ? ` on the ${p.score} score` : "";
    // A conformal threshold above 1 answers nothing: too few calibration labels to certify alpha yet.
    fact(box, "threshold", "threshold", p.threshold > 1 ? "none yet (escalates every ask)" : plain(p.threshold) + score);
  } else {
    fact(box, "threshold", "threshold", "–");
  }
  if (isNum(p.alpha)) fact(box, "alpha", "target error α", pctFine(p.alpha));
  if (p.calibration_labels !== undefined) fact(box, "calibration", "calibration labels", num(p.calibration_labels));
  if (isNum(p.threshold) && p.threshold > 1 && isNum(p.alpha)) {
    fact(box, "bound", "auto-answer error", "not certified yet (too few calibration labels)");
  } else if (isNum(p.error_upper_bound)) {
    const conf = isNum(p.delta) ? ` with ${pctFine(1 - p.delta)} confidence` : "";
    fact(box, "bound", "auto-answer error ≤", pct(p.error_upper_bound) + conf,
      "Clopper–Pearson upper bound on the error of the answers given without a human, from the calibration labels");
  } else if (!isNum(p.alpha)) {
    fact(box, "bound", "error bound", "none (not calibrated)");
  }
  const audit = data.audit && data.audit.labels;
  if (audit !== undefined && audit !== null) {
    const text = Array.isArray(audit) ? num(audit.length)
      : typeof audit === "object" ? Object.entries(audit).map(([k, v]) => `${k} ${num(v)}`).join(" · ") : num(audit);
    fact(box, "audit", "audit labels", text);
  }
  const live = data.live || {};
  if (live.asks) {
    fact(box, "live", "live coverage", `${pct(live.coverage)} of ${num(live.asks)} identify asks (${num(live.escalated)} escalated)`);
  }
  const serving = data.serving || data.model_version;
  if (serving) fact(box, "serving", "serving", short(String(serving), 42));
}

function loopEmpty(container) {
  container.replaceChildren();
  const box = document.createElement("div");
  box.className = "empty-state";
  box.setAttribute("role", "note");
  box.id = "loop-empty";
  const strong = document.createElement("strong");
  strong.textContent = "No model versions yet";
  const code = document.createElement("code");
  code.textContent = "lookloop train";
  const hint = document.createElement("div");
  hint.className = "muted small";
  hint.textContent = "Each trained version appears here as a point: labels seen against its held-out accuracy, coverage and error.";
  const line = document.createElement("div");
  line.append(strong, document.createTextNode(" — run "), code);
  box.append(line, hint);
  container.appendChild(box);
}

function niceTicks(lo, hi, count) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / Math.max(1, count);
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((v) => v >= raw) || 10 * p;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(+v.toFixed(6));
  return ticks;
}

function titled(svg, text) {
  svg.setAttribute("aria-label", text);
  const t = svgEl("title", {}, null);
  t.textContent = text;
  svg.insertBefore(t, svg.firstChild);
}

function loopChart(container, versions, policy) {
  // One SVG, two panes sharing the x axis: rates near 100% above, the small auto-answer error (and alpha) below.
  const width = 720;
  const height = 350;
  const f = frame(container, width, height, { l: 62, r: 64, t: 22, b: 44 });
  const upper = { top: f.y1, bottom: 194 };
  const lower = { top: 228, bottom: f.y0 };
  const byX = versions
    .map((v, i) => Object.assign({}, v, { order: i, x: isNum(v.labels) ? v.labels : 0 }))
    .sort((a, b) => a.x - b.x || a.order - b.order);
  const xs = byX.map((v) => v.x);
  let lo = Math.min(...xs);
  let hi = Math.max(...xs);
  const padX = hi > lo ? (hi - lo) * 0.06 : Math.max(1, lo * 0.1);
  lo = Math.max(0, lo - padX);
  hi += padX;
  const xAtL = (v) => f.x0 + ((f.x1 - f.x0) * (v - lo)) / (hi - lo);
  const alpha = isNum(policy.alpha) ? policy.alpha : null;
  const errors = byX.map((v) => v.auto_error).filter(isNum);
  const emax = niceMax(Math.max(0.02, ...errors, alpha || 0) * 1.25);
  const yUp = (v) => upper.bottom - ((upper.bottom - upper.top) * Math.max(0, Math.min(v, 1)));
  const yLow = (v) => lower.bottom - ((lower.bottom - lower.top) * Math.max(0, Math.min(v, emax))) / emax;

  const g = svgEl("g", { class: "axis" }, f.svg);
  for (let i = 0; i <= 4; i++) {
    const y = yUp(i / 4);
    svgEl("line", { x1: f.x0, x2: f.x1, y1: y, y2: y, class: "grid-line" }, g);
    svgEl("text", { x: f.x0 - 6, y: y + 4, "text-anchor": "end" }, g).textContent = pctAxis(i / 4);
  }
  for (let i = 0; i <= 2; i++) {
    const v = (emax * i) / 2;
    const y = yLow(v);
    svgEl("line", { x1: f.x0, x2: f.x1, y1: y, y2: y, class: "grid-line" }, g);
    svgEl("text", { x: f.x0 - 6, y: y + 4, "text-anchor": "end" }, g).textContent = pctFine(v);
  }
  for (const [pane, text] of [[upper, "accuracy · coverage"], [lower, "auto error"]]) {
    const y = (pane.top + pane.bottom) / 2;
    svgEl("text", { x: 12, y, "text-anchor": "middle", transform: `rotate(-90 12 ${y})`, class: "axis-title" }, g).textContent = text;
  }
  for (const t of niceTicks(lo, hi, 6)) {
    const x = xAtL(t);
    svgEl("line", { x1: x, x2: x, y1: f.y0, y2: f.y0 + 4, class: "grid-line" }, g);
    svgEl("text", { x, y: f.y0 + 16, "text-anchor": "middle" }, g).textContent = num(t);
  }
  svgEl("text", { x: (f.x0 + f.x1) / 2, y: f.y0 + 36, "text-anchor": "middle", class: "axis-title" }, g)
    .textContent = "labels seen";

  const serving = byX.find((v) => v.serving);
  if (serving) {
    const x = xAtL(serving.x);
    svgEl("line", { x1: x, x2: x, y1: upper.top - 4, y2: f.y0, class: "serving-mark" }, f.svg);
    const label = svgEl("text", { x, y: upper.top - 8, "text-anchor": "middle", class: "serving-label" }, f.svg);
    label.textContent = "serving";
  }
  if (alpha !== null) {
    const y = yLow(alpha);
    const line = svgEl("line", { x1: f.x0, x2: f.x1, y1: y, y2: y, class: "alpha-line", "data-alpha": alpha }, f.svg);
    svgEl("title", {}, line).textContent = `policy target error α = ${pctFine(alpha)}`;
    svgEl("text", { x: f.x1 + 6, y: y + 4, class: "alpha-label" }, f.svg).textContent = `α ${pctFine(alpha)}`;
  }

  for (const s of LOOP_SERIES) {
    const yAt = s.lower ? yLow : yUp;
    let d = "";
    let pen = false;
    for (const v of byX) {
      if (!isNum(v[s.key])) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${xAtL(v.x).toFixed(1)},${yAt(v[s.key]).toFixed(1)}`;
      pen = true;
    }
    if (d) svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": 2.2, "stroke-linejoin": "round", class: "series", "data-series": s.key }, f.svg);
  }
  for (const v of byX) {
    const desc = [`${v.id}${v.kind ? " (" + v.kind + ")" : ""}`, `${num(v.labels)} labels`]
      .concat(LOOP_SERIES.filter((s) => isNum(v[s.key])).map((s) => `${s.tip} ${pct(v[s.key])}`))
      .concat(v.serving ? ["serving"] : []).join(" · ");
    const grp = svgEl("g", { class: "version" + (v.serving ? " serving" : ""), "data-version": v.id, "data-labels": v.x, "aria-label": desc }, f.svg);
    if (v.serving) grp.dataset.serving = "true";
    const x = xAtL(v.x);
    for (const s of LOOP_SERIES) {
      if (!isNum(v[s.key])) continue;
      const dot = svgEl("circle", {
        cx: x, cy: (s.lower ? yLow : yUp)(v[s.key]), r: v.serving ? 5 : 3.5,
        fill: v.serving ? s.color : "#fff", stroke: s.color, "stroke-width": 1.8, class: "point", "data-series": s.key,
      }, grp);
      hover(dot, () => desc);
    }
    // A version without metrics still shows where it sits on the labels axis.
    if (!LOOP_SERIES.some((s) => isNum(v[s.key]))) {
      const mark = svgEl("circle", { cx: x, cy: f.y0, r: 3.5, class: "point bare" }, grp);
      hover(mark, () => desc + " · no held-out metrics");
    }
  }
  const head = alpha !== null ? `, against the policy's α of ${pctFine(alpha)}` : "";
  titled(f.svg, `Learning loop: accuracy, coverage and auto-answer error of ${versions.length} model version${versions.length === 1 ? "" : "s"} by labels seen${head}`);
  container.dataset.points = String(byX.length);
  const items = LOOP_SERIES.map((s) => ({ label: s.label, color: s.color }));
  if (alpha !== null) items.push({ label: `policy α (${pctFine(alpha)})`, color: "#1d2433", dashed: true });
  legend(container, items);
}

function loopDays(container, days) {
  const f = frame(container, 380, 230, { l: 44, r: 22, t: 12, b: 26 });
  const pts = days.filter((d) => isNum(d.coverage)).map((d) => Object.assign({}, d, { date: new Date(d.day + "T00:00:00") }));
  titled(f.svg, `Live coverage by day over ${pts.length} day${pts.length === 1 ? "" : "s"}`);
  container.dataset.points = String(pts.length);
  const g = svgEl("g", { class: "axis" }, f.svg);
  for (let i = 0; i <= 4; i++) {
    const y = f.y0 - ((f.y0 - f.y1) * i) / 4;
    svgEl("line", { x1: f.x0, x2: f.x1, y1: y, y2: y, class: "grid-line" }, g);
    svgEl("text", { x: f.x0 - 6, y: y + 4, "text-anchor": "end" }, g).textContent = pctAxis(i / 4);
  }
  if (!pts.length) {
    emptyNote(f, "no identify asks yet");
    return;
  }
  const DAY = 86400000;
  const t0 = pts[0].date.getTime();
  const t1 = pts[pts.length - 1].date.getTime();
  const xOf = (p) => (t1 > t0 ? f.x0 + ((f.x1 - f.x0) * (p.date.getTime() - t0)) / (t1 - t0) : (f.x0 + f.x1) / 2);
  const yOf = (v) => f.y0 - (f.y0 - f.y1) * Math.max(0, Math.min(v, 1));
  const every = Math.max(1, Math.ceil(pts.length / 5));
  pts.forEach((p, i) => {
    if (i % every !== 0) return;
    svgEl("text", { x: xOf(p), y: f.y0 + 16, "text-anchor": "middle" }, g).textContent = tickLabel(p.date, "day");
  });
  // Days without asks break the line rather than bridging it.
  let d = "";
  pts.forEach((p, i) => {
    const gap = i === 0 || p.date.getTime() - pts[i - 1].date.getTime() > 1.5 * DAY;
    d += `${gap ? "M" : "L"}${xOf(p).toFixed(1)},${yOf(p.coverage).toFixed(1)}`;
  });
  svgEl("path", { d, fill: "none", stroke: COLORS.b, "stroke-width": 2, "stroke-linejoin": "round", class: "series", "data-series": "coverage" }, f.svg);
  for (const p of pts) {
    const dot = svgEl("circle", { cx: xOf(p), cy: yOf(p.coverage), r: pts.length > 40 ? 2 : 3, fill: "#fff", stroke: COLORS.b, "stroke-width": 1.6, class: "point", "data-day": p.day }, f.svg);
    hover(dot, () => `${tickLabel(p.date, "day")} · coverage ${pct(p.coverage)} (${num(p.answered)} of ${num(p.asks)} asks answered without a human)`);
  }
}

// -- tooltip --------------------------------------------------------------------------------------------------

function hover(el, text) {
  const tip = $("tooltip");
  el.addEventListener("mouseenter", () => { tip.textContent = text(); tip.hidden = false; });
  el.addEventListener("mousemove", (ev) => { tip.style.left = ev.clientX + 12 + "px"; tip.style.top = ev.clientY + 12 + "px"; });
  el.addEventListener("mouseleave", () => { tip.hidden = true; });
}

// -- start ----------------------------------------------------------------------------------------------------

if (client.token) start(); else showLogin("");
