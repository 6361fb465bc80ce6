// The reviewer page: keyboard-first, the next item preloaded, live items pushed over a WebSocket.
// Keys act only while the focus is on the page itself or on the highlighted candidate: a focused button or the text
// box keeps its own keys (Enter on "skip" skips). An answer waits HOLD_MS on the page before it is sent, so it can be
// undone; the next item is on screen meanwhile.
import { $, apiClient, signInForm } from "./api.js";

const HOLD_MS = 4000;
const state = {
  current: null, next: null, picked: 0, busy: false, done: [], ws: null, retry: 0, poll: null, held: null,
  newItem: false,
};
window.__review = state; // for the browser tests
const client = apiClient({ tokenKey: "lookloop.review.token", onSignedOut: showSignIn });

// -- sign in --------------------------------------------------------------------------------------------
function showSignIn() {
  if (state.held) commit(state.held);
  if (state.ws) state.ws.close();
  state.current = state.next = null;
  $("workspace").hidden = $("stats").hidden = $("keys").hidden = true;
  $("login").hidden = false;
  $("username").focus();
}

async function start() {
  let me;
  try { me = await client.api("/v1/auth/me"); } catch (_) { return; }
  $("who").textContent = `${me.name} · ${me.role}`;
  $("login").hidden = true;
  $("workspace").hidden = $("stats").hidden = $("keys").hidden = false;
  loadCatalog();
  refreshTrust();
  connect();
  await fill();
  clearInterval(state.poll);
  state.poll = setInterval(() => { if (!state.current) fill(); refreshCounts(); }, 5000);
  setInterval(showRate, 2000);
  setInterval(showAge, 1000);
}

async function loadCatalog() {
  try {
    const items = await client.api("/v1/catalog");
    $("catalog").replaceChildren(...items.map((i) => Object.assign(document.createElement("option"), { value: i.name })));
  } catch (_) { /* completion is a nicety */ }
}

// -- live socket --------------------------------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/review/stream?token=${encodeURIComponent(client.token)}`);
  state.ws = ws;
  ws.onopen = () => { $("conn").classList.add("on"); state.retry = 0; };
  ws.onclose = (e) => {
    $("conn").classList.remove("on");
    if (state.ws !== ws) return;
    if (e.code === 4401) {  // signed out, disabled or a new password: the token is dead, so no retrying
      client.token = "";
      showSignIn();
      return;
    }
    if (client.token) setTimeout(connect, Math.min(10000, 500 * 2 ** state.retry++));
  };
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === "item") pushes = pushes.then(() => pushed(ev.item)).catch(() => {});
    else if (ev.type === "queue" || ev.type === "hello") { counts(ev); if (!state.current) fill(); }
  };
}

// Pushed items are taken in the order they came: each waits for its frame, and a later one whose frame came
// first would otherwise go on screen before one that has waited longer.
let pushes = Promise.resolve();

async function pushed(item) {
  // A live item was locked to us: it goes on screen now, or straight after the current one.
  await withFrame(item);
  refreshCounts();
  if (state.held && state.held.item.id === item.id) return; // the answer waiting to be sent is for it
  if (!state.current) { show(item); preload(); return; }
  if (state.current.id === item.id) return;
  const old = state.next;
  state.next = item;
  if (old && old.id !== item.id) client.post(`/v1/review/items/${old.id}/release`).catch(() => {});
  nextInfo();
}

// -- queue ----------------------------------------------------------------------------------------------
async function withFrame(item) {
  if (item && item.frame_url && !item.src) {
    try { item.src = URL.createObjectURL(await client.api(item.frame_url)); } catch (_) { item.src = ""; }
  }
  return item;
}

async function claimNext() {
  const item = await client.post("/v1/review/next");
  return item ? withFrame(item) : null;
}

async function fill() {
  if (state.current || state.busy) return;
  state.busy = true;
  try {
    const item = state.next || (await claimNext());
    if (state.next === item) state.next = null;
    if (!state.current) {
      if (item) { show(item); preload(); } else showEmpty();
    } else if (item && item.id !== state.current.id && !(state.next && state.next.id === item.id)) {
      // An item pushed while this one was claimed (coming on duty) went on screen first: this one comes next.
      if (!state.next) state.next = item;
      else client.post(`/v1/review/items/${item.id}/release`).catch(() => {});
      nextInfo();
    }
  } catch (e) { flash(e.message, true); } finally { state.busy = false; }
}

async function preload() {
  if (state.next) return nextInfo();
  try {
    const item = await claimNext();
    if (item && state.current && item.id === state.current.id) return;
    if (item && state.next && state.next.id !== item.id) {
      // An item was pushed meanwhile and is next already: this one goes back to the queue.
      client.post(`/v1/review/items/${item.id}/release`).catch(() => {});
    } else state.next = state.next || item;
  } catch (_) { state.next = null; }
  nextInfo();
}

function nextInfo() {
  $("next-info").textContent = state.next ? `next: ${state.next.question} (ready)` : "next: —";
}

function showEmpty() {
  state.current = null;
  $("panel").dataset.item = "";
  $("age").textContent = "";
  $("frame").hidden = true;
  $("badge-live").hidden = true;
  $("empty").hidden = false;
  $("panel").style.opacity = 0.35;
  $("question").textContent = "—";
  $("ai-answer").textContent = "—";
  $("conf").textContent = "—";
  $("conf-bar").style.width = "0";
  $("candidates").replaceChildren();
}

function show(item, { picked = 0, typed = "" } = {}) {
  const hadFocus = focusIsOurs();
  state.current = item;
  state.picked = 0;
  $("panel").dataset.item = item.id;
  $("empty").hidden = true;
  $("panel").style.opacity = 1;
  $("frame").hidden = !item.src;
  if (item.src) $("frame").src = item.src;
  $("badge-live").hidden = !item.live;
  $("question").textContent = item.question;
  $("ai-answer").textContent = item.ai_answer || "—";
  const pct = Math.round((item.confidence || 0) * 100);
  $("conf").textContent = `${pct}%`;
  $("conf-bar").style.width = `${pct}%`;
  // Each candidate is a button: a click, or Enter or Space on it, accepts that candidate.
  $("candidates").replaceChildren(...item.candidates.map((c, i) => {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "cand";
    btn.dataset.index = i;
    const name = c.label.replace(/[-_]/g, " ");
    const k = document.createElement("kbd"); k.textContent = i + 1;
    const n = document.createElement("span"); n.className = "name"; n.textContent = name;
    const s = document.createElement("span"); s.className = "score"; s.textContent = `${Math.round(c.score * 100)}%`;
    const b = document.createElement("span"); b.className = "cbar"; b.setAttribute("aria-hidden", "true");
    const fill = document.createElement("i"); fill.style.width = `${Math.round(c.score * 100)}%`; b.append(fill);
    btn.append(k, n, s, b);
    btn.addEventListener("click", () => { pick(i); act("answer", c.label); });
    btn.addEventListener("focus", () => pick(i)); // the focused candidate is the highlighted one
    li.append(btn);
    return li;
  }));
  $("typed").value = typed;
  newItemMode(false);
  pick(Math.min(picked, Math.max(0, item.candidates.length - 1)), hadFocus);
  showAge();
  nextInfo();
}

/** Whether the keyboard focus is somewhere the page moves itself: nowhere, or in the item's panel. */
function focusIsOurs() {
  const el = document.activeElement;
  return !el || el === document.body || (el !== $("typed") && $("panel").contains(el));
}

const candButton = (i) => document.querySelector(`#candidates button[data-index="${i}"]`);

function pick(i, focus = false) {
  if (!state.current || i >= state.current.candidates.length) return;
  state.picked = i;
  document.querySelectorAll("#candidates button").forEach((b) => {
    const on = +b.dataset.index === i;
    b.classList.toggle("picked", on);
    b.parentElement.classList.toggle("picked", on);
    if (on) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current");
  });
  if (focus && candButton(i)) candButton(i).focus();
}

// How long the wearer has waited: counted from the escalation, shown beside the question.
function showAge() {
  const item = state.current;
  if (!item || !item.created_at) { $("age").textContent = ""; return; }
  const at = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(item.created_at) ? item.created_at : `${item.created_at}Z`);
  const s = Math.max(0, Math.round((Date.now() - at) / 1000));
  const text = s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.floor(s % 3600 / 60)} min`;
  $("age").textContent = `asked ${text} ago`;
  $("age").classList.toggle("old", item.live && s >= 30);
}

/** Skip goes now; an answer or "can't tell" waits HOLD_MS on the page (undo) while the next item is shown. */
async function act(kind, value) {
  const item = state.current;
  if (!item || state.busy) return;
  state.busy = true;
  try {
    if (kind === "skip") {
      await client.post(`/v1/review/items/${item.id}/skip`);
      flash("skipped: someone else takes it");
      if (item.src) URL.revokeObjectURL(item.src);
    } else {
      if (state.held) commit(state.held); // only the last answer can be undone: the one before goes now
      hold(item, kind, value);
    }
    state.current = null;
    const nxt = state.next;
    state.next = null;
    if (nxt) { show(nxt); preload(); } else { state.busy = false; await fill(); }
    refreshCounts();
  } catch (e) {
    flash(e.message, true);
    if (/answered already|another reviewer|lock/.test(e.message)) { state.current = null; state.busy = false; await fill(); }
  } finally { state.busy = false; }
}

const said = (h) => (h.kind === "reject" ? "can't tell"
  : h.newItem ? `✓ ${h.value} (not in the catalogue: an operator decides)` : `✓ ${h.value}`);

function hold(item, kind, value) {
  const held = { item, kind, value, picked: state.picked, typed: $("typed").value, until: Date.now() + HOLD_MS,
    newItem: kind === "answer" && !!state.newItem };
  held.timer = setTimeout(() => commit(held), HOLD_MS);
  held.tick = setInterval(() => showHeld(held), 250);
  state.held = held;
  flash(`${said(held)} — sending in ${HOLD_MS / 1000} s; u undoes it`, false, HOLD_MS);
  showHeld(held);
}

function showHeld(held) {
  if (state.held !== held) return;
  const left = Math.max(0, Math.ceil((held.until - Date.now()) / 1000));
  $("undo-text").textContent = `${said(held)} · sending in ${left} s`;
  $("undo-bar").hidden = false;
}

function unhold(held) {
  clearTimeout(held.timer);
  clearInterval(held.tick);
  if (state.held === held) state.held = null;
  $("undo-bar").hidden = !state.held;
}

/** Sends a held answer now (its time is up, another answer follows, or the page is closing). */
async function commit(held, { keepalive = false } = {}) {
  if (held.sent) return;
  held.sent = true;
  unhold(held);
  const { item, kind, value } = held;
  const body = kind === "reject" ? { action: "reject" } : { action: "answer", value };
  try {
    if (keepalive) {
      client.request(`/v1/review/items/${item.id}/answer`, { method: "POST", json: body, keepalive: true });
      return;
    }
    const res = await client.post(`/v1/review/items/${item.id}/answer`, body);
    state.done.push(Date.now());
    $("st-done").textContent = state.done.length;
    const what = res && BECAME[res.label];
    flash(`sent: ${said(held)}${what ? ` — ${what}` : ""}`, false, what ? 4000 : 2500);
    refreshTrust();
    showRate();
    refreshCounts();
  } catch (e) {
    flash(`not sent (${said(held)}): ${e.message}`, true);
  } finally {
    if (item.src && !keepalive) URL.revokeObjectURL(item.src);
  }
}

/** Takes back the answer still waiting to be sent: its item returns to the screen, the one shown goes next. */
function undo() {
  const held = state.held;
  if (!held || held.sent || state.busy) return;
  unhold(held);
  const shown = state.current;
  if (shown && shown.id !== held.item.id) {
    const old = state.next;
    if (old && old.id !== shown.id) client.post(`/v1/review/items/${old.id}/release`).catch(() => {});
    state.next = shown;
  }
  show(held.item, { picked: held.picked, typed: held.typed });
  flash("undone: nothing was sent");
}

/** "Not in the catalogue": the text box takes the thing's name without catalogue completion. The answer becomes a
 * proposal an operator turns into a new catalogue item (or rejects); until then it teaches the model nothing. */
function newItemMode(on) {
  const box = $("typed");
  state.newItem = on;
  box.dataset.mode = on ? "new" : "";
  if (on) box.removeAttribute("list"); else box.setAttribute("list", "catalog");
  box.placeholder = on ? "not in the catalogue: type its name…" : "/  type a label…";
  $("btn-new").setAttribute("aria-pressed", on ? "true" : "false");
  if (on) box.focus();
}

function accept() {
  if (!state.current) return;
  const typed = $("typed").value.trim();
  if (typed) return act("answer", typed);
  const c = state.current && state.current.candidates[state.picked];
  if (c) return act("answer", c.label);
  flash("pick a candidate or type a label", true);
}

// -- trust --------------------------------------------------------------------------------------------
// What became of an answer (the answer API's "label").
const BECAME = {
  applied: "applied: it teaches the model now",
  pending: "waiting for a second reviewer who agrees",
  proposal: "proposed as a new item: an operator decides",
};

/** The reviewer's trust, from their stats: trusted, or how many right gold answers are still to go. */
function trustLine(me) {
  if (me.trusted) return "trusted: your answers teach the model at once";
  const acc = me.gold_accuracy === null ? "" : ` (accuracy so far ${Math.round(me.gold_accuracy * 100)}%)`;
  if (me.gold_to_go === null) {
    return `gold accuracy${acc} below ${Math.round(me.min_gold_accuracy * 100)}%: your answers wait for a second reviewer`;
  }
  const n = me.gold_to_go;
  return `${n} gold answer${n === 1 ? "" : "s"} to go${acc}: until then your answers wait for a second reviewer`;
}

async function refreshTrust() {
  try {
    const [me] = await client.api("/v1/review/stats");
    if (!me) return;
    const line = trustLine(me);
    if ($("trust").textContent !== line) $("trust").textContent = line; // announced only when it changes
    $("trust").classList.toggle("trusted", !!me.trusted);
  } catch (_) { /* offline: the line stays as it was */ }
}

// -- numbers ------------------------------------------------------------------------------------------
function showRate() {
  const now = Date.now();
  const recent = state.done.filter((t) => now - t < 5 * 60000);
  const since = recent.length ? Math.max(now - recent[0], 60000) : 60000;
  $("st-rate").textContent = (recent.length / (since / 60000)).toFixed(1);
}

function counts(c) {
  if (typeof c.open === "number") $("st-open").textContent = c.open;
  if (typeof c.live === "number") $("st-live").textContent = c.live;
}

async function refreshCounts() { try { counts(await client.api("/v1/review/queue")); } catch (_) { /* offline */ } }

let flashTimer = null;
function flash(text, bad, ms = 2500) {
  $("flash").textContent = text;
  $("flash").classList.toggle("bad", !!bad);
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { $("flash").textContent = ""; }, bad ? Math.max(ms, 5000) : ms);
}

// -- keys -----------------------------------------------------------------------------------------------
// The page's keys work while the focus is on the page itself or on the highlighted candidate. Anywhere else (the
// text box, another button, the header) the focused control keeps its own keys: Enter on "skip" skips.
function keysAreOurs() {
  const el = document.activeElement;
  if (!el || el === document.body || el === document.documentElement) return true;
  return el.classList.contains("cand") && +el.dataset.index === state.picked;
}

document.addEventListener("keydown", (ev) => {
  if (!client.token || $("workspace").hidden || ev.defaultPrevented) return;
  if (document.activeElement === $("typed")) {
    if (ev.key === "Escape") { $("typed").blur(); newItemMode(false); ev.preventDefault(); }
    return; // Enter in the box submits the form; Ctrl+Z undoes typing
  }
  if (!$("help").hidden) {
    if (ev.key === "Escape" || ev.key === "?") { $("help").hidden = true; ev.preventDefault(); }
    return;
  }
  if (!keysAreOurs()) return;
  const onChoice = document.activeElement && document.activeElement.classList.contains("cand");
  if ((ev.ctrlKey || ev.metaKey) && !ev.altKey && !ev.shiftKey && ev.key.toLowerCase() === "z") {
    undo(); ev.preventDefault(); return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "?") { $("help").hidden = false; ev.preventDefault(); return; }
  if (/^[1-9]$/.test(ev.key)) { pick(+ev.key - 1, true); ev.preventDefault(); }
  else if (ev.key === "Enter" || ev.key === " ") {
    if (onChoice) return; // the highlighted candidate's own click accepts it
    if (ev.key === "Enter") { accept(); ev.preventDefault(); }
  } else if (ev.key === "/" || ev.key === "t") { $("typed").focus(); ev.preventDefault(); }
  else if (ev.key === "n") { newItemMode(true); ev.preventDefault(); }
  else if (ev.key === "r") { act("reject"); ev.preventDefault(); }
  else if (ev.key === "s") { act("skip"); ev.preventDefault(); }
  else if (ev.key === "u") { undo(); ev.preventDefault(); }
});

$("type-form").addEventListener("submit", (ev) => { ev.preventDefault(); $("typed").blur(); accept(); });
$("btn-accept").onclick = accept;
$("btn-reject").onclick = () => act("reject");
$("btn-skip").onclick = () => act("skip");
$("btn-new").onclick = () => newItemMode(!state.newItem);
$("btn-undo").onclick = undo;
$("logout").onclick = async () => {
  if (state.held) await commit(state.held);
  client.signOut();
  showSignIn();
};
signInForm(client, { onSignedIn: start });
window.addEventListener("pagehide", () => {
  // An answer waiting for its undo time goes now; the preloaded item goes back so nobody waits for its lock.
  if (state.held && client.token) commit(state.held, { keepalive: true });
  if (state.next && client.token) client.request(`/v1/review/items/${state.next.id}/release`, { method: "POST", keepalive: true });
});

if (client.token) start(); else showSignIn();
