/* lookloop operator dashboard: data from /v1/operators/summary and /v1/operators/loop, charts in charts.js. */
import { $, apiClient, signInForm, SignedOut } from "./api.js";
import { loadProposals } from "./dashboard-proposals.js";
import {
  clear, COLORS, confusion, few, isNum, lineChart, loopChart, loopDays, MIN_SAMPLE, num, ofN, pct, pctAxis, pctFine, plain,
  secAxis, secs, short, stackedBars, timeMax,
} from "./charts.js";

const client = apiClient({ tokenKey: "lookloop.operator.token", onSignedOut: showLogin });
const api = (path, options) => client.api(path, options);
const state = { data: null, loop: null };
// The one definition of coverage, said wherever coverage is shown.
const COVERAGE = "share of asks the AI answered without a person";

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
  // The learning loop is not windowed: it loads beside the summary, and its failure leaves the rest drawn.
  const loop = loadLoop();
  loadProposals(api);
  try {
    const data = await api("/v1/operators/summary?since=" + encodeURIComponent(since));
    state.data = data;
    render(data);
    const at = new Date().toLocaleTimeString();
    $("status").textContent = `Updated ${at} · ${data.metrics.totals.asks} asks in the window, bucketed by ${data.metrics.bucket}`;
    await loop;
    scrollables();
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
$("report").addEventListener("click", downloadReport);
// r reloads while the focus is on the page itself; a focused control keeps its own keys.
document.addEventListener("keydown", (ev) => {
  const onPage = !document.activeElement || document.activeElement === document.body;
  if (ev.key === "r" && onPage && !ev.ctrlKey && !ev.metaKey && !ev.altKey && !$("board").hidden) load();
});

/** The PNG report, fetched with the sign-in token (a plain link would carry none) and saved as a file. */
async function downloadReport() {
  const since = windowParam();
  const button = $("report");
  button.disabled = true;
  $("status").textContent = "Drawing the PNG report…";
  try {
    const png = await api("/v1/operators/plots/overview.png?since=" + encodeURIComponent(since));
    const url = URL.createObjectURL(png);
    const a = Object.assign(document.createElement("a"), { href: url, download: `lookloop-report-${since}.png` });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    $("status").textContent = `PNG report of the ${$("window").selectedOptions[0].text} saved (lookloop-report-${since}.png)`;
  } catch (err) {
    if (!(err instanceof SignedOut)) $("status").textContent = "Could not make the PNG report: " + err.message;
  } finally {
    button.disabled = false;
  }
}

// -- rendering ------------------------------------------------------------------------------------------------

/** A card wider than the screen (a phone) scrolls sideways: it takes the focus, so the keyboard can scroll it. */
function scrollables() {
  for (const card of document.querySelectorAll("#board .card")) {
    if (card.scrollWidth > card.clientWidth + 1) {
      card.tabIndex = 0;
      card.setAttribute("role", "region");
      card.setAttribute("aria-label", (card.querySelector("h2") || card).textContent.trim() + " (scrolls sideways)");
    } else if (card.hasAttribute("tabindex")) {
      card.removeAttribute("tabindex");
      card.removeAttribute("role");
      card.removeAttribute("aria-label");
    }
  }
}
window.addEventListener("resize", () => { if (!$("board").hidden) scrollables(); });

function render(data) {
  const m = data.metrics;
  renderKpis(m.totals, data.queue || {});
  const pts = m.points.map((p) => Object.assign({}, p, { date: new Date(p.start) }));
  lineChart($("chart-accuracy"), pts, m.bucket, [
    { key: "accuracy", label: "all labelled asks", color: COLORS.a, n: "labelled" },
    { key: "auto_accuracy", label: "answered without a person", color: COLORS.b, n: "auto_labelled" },
  ], { max: 1, format: pct, axis: pctAxis });
  lineChart($("chart-coverage"), pts, m.bucket, [
    { key: "coverage", label: "coverage", color: COLORS.b, n: "asks" },
    { key: "escalation_rate", label: "escalation rate", color: COLORS.c, n: "asks" },
  ], { max: 1, format: pct, axis: pctAxis });
  lineChart($("chart-answer-time"), pts, m.bucket, [
    { key: "human_resolution_p50_s", label: "median", color: COLORS.e, n: "escalated" },
    { key: "human_resolution_p95_s", label: "p95", color: COLORS.d, n: "escalated" },
  ], { format: secs, axis: secAxis, nice: timeMax });
  stackedBars($("chart-labels"), pts, m.bucket);
  confusion($("chart-confusion"), m.confusion);
  perClass($("per-class"), m.confusion);
  groups($("groups"), m.groups || []);
  reviewers($("reviewers"), data.reviewers || []);
  models($("models"), data.models);
}

function renderKpis(t, queue) {
  const ended = [[t.human_answered, "answered"], [t.human_rejected, "can't tell"], [t.human_cancelled, "cancelled"],
    [t.human_waiting, "still waiting"]].filter(([n]) => n).map(([n, what]) => `${num(n)} ${what}`).join(", ");
  // [label, value, what it rests on, how many that is (null: no warning), what it means]
  const tiles = [
    ["Asks", num(t.asks), `${num(t.ai_answered)} answered by the AI alone`, null],
    ["Coverage", pct(t.coverage), ofN("", t.asks, "asks").trim(), t.asks, COVERAGE],
    ["Escalation rate", pct(t.escalation_rate), `${num(t.escalated)} of ${num(t.asks)} asks went to a person`, t.asks],
    ["Accuracy", pct(t.accuracy), ofN("", t.labelled, "labels").trim(), t.labelled,
      `AI guess = label · without a person: ${pct(t.auto_accuracy)} of ${num(t.auto_labelled)}`],
    ["Human time to resolution", secs(t.human_resolution_p50_s), `median of ${num(t.escalated)} escalations`,
      t.escalated, `p95 ${secs(t.human_resolution_p95_s)}${ended ? ` · ${ended}` : ""}`],
    ["Labels spent", num(t.labels_spent), Object.entries(t.labels_by_source || {})
      .map(([k, v]) => `${k} ${v}${k === "wearer" ? " (free)" : ""}`).join(" · ") || "none", null],
    ["Queue", num(queue.open), `${num(queue.live)} live · ${num(queue.operator)} for operators`, null],
  ];
  const box = $("kpis");
  box.replaceChildren();
  for (const [label, value, sub, n, more] of tiles) {
    const el = document.createElement("div");
    el.className = "kpi";
    el.dataset.kpi = label;
    el.innerHTML = '<div class="label"></div><div class="value"></div><div class="sub"></div>';
    el.querySelector(".label").textContent = label;
    el.querySelector(".value").textContent = value;
    el.querySelector(".sub").textContent = sub;
    if (more) el.appendChild(Object.assign(document.createElement("div"), { className: "sub more", textContent: more }));
    if (n !== null && few(n) && n > 0) el.appendChild(fewNote(n));
    box.appendChild(el);
  }
}

/** The warning under a figure that rests on too few cases to trust. */
function fewNote(n) {
  const el = document.createElement("div");
  el.className = "few";
  el.textContent = `⚠ only ${num(n)}: under ${MIN_SAMPLE}, may be chance`;
  return el;
}
/** A table cell's text with what it rests on ("33% of 3"), marked when that is too few. */
function cellOfN(text, n) {
  if (!isNum(n) || n === 0) return text;
  const span = document.createElement("span");
  span.textContent = `${text} of ${num(n)}`;
  if (few(n)) {
    const mark = document.createElement("span");
    mark.className = "few-mark";
    mark.textContent = " ⚠";
    mark.title = `only ${n}: under ${MIN_SAMPLE}, may be chance`;
    mark.setAttribute("aria-label", `(only ${n}: may be chance)`);
    span.appendChild(mark);
  }
  return span;
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
  const rows = c.per_class.map((x) => ({
    cells: [[x.label], [cellOfN(pct(x.recall), x.support), "num"], [cellOfN(pct(x.precision), x.guessed), "num"]],
  }));
  table(el, [["class"], ["recall (of labelled)", "num"], ["precision (of guessed)", "num"]], rows);
}

/** Per group: coverage, escalation, the error measured on audit labels, and what the policy certifies there. */
function groups(el, list) {
  if (!list.length) {
    table(el, [["No ask about a product decided per group yet, and no per-group policy serves."]], []);
    return;
  }
  const rows = list.map((g) => {
    const certified = isNum(g.bound);
    const promise = document.createElement("span");
    promise.className = certified ? "certified" : g.group === "unknown" ? "muted" : "no-guarantee";
    promise.textContent = g.guarantee || (certified ? `error ≤ ${pct(g.bound)}` : "–");
    if (g.group !== "unknown") promise.title = `calibrated on ${num(g.calibration_labels || 0)} labels of this group`;
    return {
      className: certified ? "" : "uncertified",
      cells: [[g.group], [num(g.asks), "num"], [g.asks ? cellOfN(pct(g.coverage), g.asks) : "–", "num"],
        [g.asks ? pct(g.escalation_rate) : "–", "num"],
        [g.audit_answered ? cellOfN(pct(g.error), g.audit_answered) : "– (no audit labels)", "num"],
        [g.group === "unknown" ? "–" : num(g.calibration_labels || 0), "num"], [promise]],
    };
  });
  const body = table(el, [["group"], ["asks", "num"], ["coverage", "num"], ["escalation", "num"],
    ["error (audit labels)", "num"], ["calibration labels", "num"], ["guarantee"]], rows);
  body.querySelectorAll("tr").forEach((tr, i) => { tr.dataset.group = list[i].group; });
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
    // Agreement only over items another person answered too: on an item settled alone it is agreement with oneself.
    const agreement = r.agreement_items ? cellOfN(pct(r.agreement), r.agreement_items) : "– (none shared)";
    return {
      cells: [[r.username || r.account_id], [num(r.items), "num"], [num(r.skips), "num"], [cellBox, "num"],
        [agreement, "num"], [r.gold_answered ? cellOfN(pct(r.gold_accuracy), r.gold_answered) : "–", "num"]],
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
      b.setAttribute("aria-label", `Promote ${v.version}`);
      b.disabled = !info.actions;
      b.addEventListener("click", () => modelAction(`/v1/operators/models/${encodeURIComponent(v.version)}/promote`, `Promote ${v.version}?`));
      actions.appendChild(b);
    }
    const m = Object.entries(v.metrics || {}).filter(([, x]) => typeof x !== "object").slice(0, 3).map(([k, x]) => `${k} ${typeof x === "number" && x <= 1 ? pct(x) : x}`).join(" · ");
    const what = v.info && v.info.kind === "startup" ? " (start-up model)" : v.info && v.info.note ? ` (${v.info.note})` : "";
    return {
      className: v.serving ? "serving" : "",
      cells: [[short(v.version, 42) + what], [v.created_at ? new Date(v.created_at).toLocaleString() : "–"], [m || "–"], [actions]],
    };
  });
  const body = table(el, [["version"], ["created"], ["metrics"], [""]], rows);
  // Roll back only when there is a version to return to, and saying which.
  if (!info.actions || !info.rollback_to) return;
  const tr = body.insertRow();
  const td = tr.insertCell();
  td.colSpan = 4;
  const rb = document.createElement("button");
  rb.type = "button";
  rb.className = "small secondary";
  rb.id = "rollback";
  rb.textContent = `Roll back to ${short(info.rollback_to, 42)}`;
  rb.title = `Serve ${info.rollback_to} again, instead of ${info.serving}`;
  rb.addEventListener("click", () => modelAction("/v1/operators/models/rollback",
    `Roll back: serve ${info.rollback_to} again instead of ${info.serving}?`));
  td.appendChild(rb);
}

async function modelAction(path, question) {
  if (!window.confirm(question)) return;
  const done = $("models-done");
  try {
    const out = await api(path, { method: "POST" });
    models($("models"), out);
    done.textContent = out.done || `Now serving ${out.serving}`;
    $("status").textContent = done.textContent;
    loadLoop(); // the serving mark and the policy follow the promotion
  } catch (err) {
    if (!(err instanceof SignedOut)) {
      done.textContent = "Model change failed: " + err.message;
      $("status").textContent = done.textContent;
    }
  }
}

// -- learning loop --------------------------------------------------------------------------------------------

function renderLoop(data) {
  const versions = (data.versions || []).slice();
  $("loop").dataset.versions = String(versions.length);
  loopPolicy($("loop-policy"), data);
  if (versions.length) loopChart($("chart-loop"), versions, data.policy || {});
  else loopEmpty($("chart-loop"), data.model_version);
  loopDays($("chart-loop-days"), data.by_day || []);
}

function loopFailed(message) {
  $("loop").dataset.versions = "";
  $("loop-policy").textContent = message;
  clear($("chart-loop"));
  clear($("chart-loop-days"));
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
  if (p.guarantees) {
    // Per group (Mondrian): each group has its own threshold and bound; the table says which.
    const all = Object.values(p.guarantees).filter((g) => g.group !== "unknown");
    const held = all.filter((g) => isNum(g.bound)).length;
    fact(box, "bound", "auto-answer error", `certified in ${held} of ${all.length} groups (see Guarantees per group)`,
      "Clopper–Pearson upper bound per group, from that group's calibration labels");
  } else if (isNum(p.threshold) && p.threshold > 1 && isNum(p.alpha)) {
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
  if (data.gate) {
    const g = data.gate;
    fact(box, "gate", "outlier gate", g.active ? `flags novelty > ${plain(g.threshold)} (false escalations ≤ ${pctFine(g.rate)})`
      : g.note || "inactive", "Asks unlike anything learnt escalate as unknown");
  }
  const serving = data.serving || data.model_version;
  if (serving) fact(box, "serving", "serving", short(String(serving), 42));
}

/** No trained version in the registry yet: the model serving now is the start-up one; say so, and what comes next. */
function loopEmpty(container, serving) {
  clear(container);
  const box = document.createElement("div");
  box.className = "empty-state";
  box.setAttribute("role", "note");
  box.id = "loop-empty";
  const line = document.createElement("div");
  const strong = document.createElement("strong");
  const code = document.createElement("code");
  code.textContent = "lookloop train";
  if (serving) {
    strong.textContent = "Serving the start-up model";
    const id = document.createElement("code");
    id.textContent = short(String(serving), 42);
    line.append(strong, " ", id, document.createElement("br"), "No trained version to compare it with yet — run ", code);
  } else {
    strong.textContent = "No model serves yet";
    line.append(strong, " — run ", code);
  }
  const hint = document.createElement("div");
  hint.className = "muted small";
  hint.textContent = "Each trained version appears here as a point: labels seen against its held-out accuracy, coverage and error.";
  box.append(line, hint);
  container.appendChild(box);
}

// -- start ----------------------------------------------------------------------------------------------------

if (client.token) start(); else showLogin("");
