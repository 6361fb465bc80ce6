// The reviewer page: keyboard-first, the next item preloaded, live items pushed over a WebSocket.
import { $, apiClient, signInForm } from "./api.js";

const state = { current: null, next: null, picked: 0, busy: false, done: [], ws: null, retry: 0, poll: null };
const client = apiClient({ tokenKey: "lookloop.review.token", onSignedOut: showSignIn });

// -- sign in --------------------------------------------------------------------------------------------
function showSignIn() {
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
  connect();
  await fill();
  clearInterval(state.poll);
  state.poll = setInterval(() => { if (!state.current) fill(); refreshCounts(); }, 5000);
  setInterval(showRate, 2000);
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
    if (ev.type === "item") pushed(ev.item);
    else if (ev.type === "queue" || ev.type === "hello") { counts(ev); if (!state.current) fill(); }
  };
}

async function pushed(item) {
  // A live item was locked to us: it goes on screen now, or straight after the current one.
  await withFrame(item);
  refreshCounts();
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
    state.next = null;
    if (item) { show(item); preload(); } else showEmpty();
  } catch (e) { flash(e.message, true); } finally { state.busy = false; }
}

async function preload() {
  if (state.next) return nextInfo();
  try {
    const item = await claimNext();
    if (item && state.current && item.id === state.current.id) return;
    state.next = state.next || item;
  } catch (_) { state.next = null; }
  nextInfo();
}

function nextInfo() {
  $("next-info").textContent = state.next ? `next: ${state.next.question} (ready)` : "next: —";
}

function showEmpty() {
  state.current = null;
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

function show(item) {
  state.current = item;
  state.picked = 0;
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
  $("candidates").replaceChildren(...item.candidates.map((c, i) => {
    const li = document.createElement("li");
    li.dataset.index = i;
    const k = document.createElement("kbd"); k.textContent = i + 1;
    const n = document.createElement("span"); n.className = "name"; n.textContent = c.label.replace(/[-_]/g, " ");
    const s = document.createElement("span"); s.className = "score"; s.textContent = `${Math.round(c.score * 100)}%`;
    const b = document.createElement("span"); b.className = "cbar";
    const fill = document.createElement("i"); fill.style.width = `${Math.round(c.score * 100)}%`; b.append(fill);
    li.append(k, n, s, b);
    li.onclick = () => { pick(i); accept(); };
    return li;
  }));
  $("typed").value = "";
  pick(0);
  nextInfo();
}

function pick(i) {
  if (!state.current || i >= state.current.candidates.length) return;
  state.picked = i;
  document.querySelectorAll("#candidates li").forEach((li) => li.classList.toggle("picked", +li.dataset.index === i));
}

async function act(kind, value) {
  const item = state.current;
  if (!item || state.busy) return;
  state.busy = true;
  try {
    if (kind === "skip") await client.post(`/v1/review/items/${item.id}/skip`);
    else await client.post(`/v1/review/items/${item.id}/answer`, kind === "reject" ? { action: "reject" } : { action: "answer", value });
    if (kind !== "skip") state.done.push(Date.now());
    $("st-done").textContent = state.done.length;
    flash(kind === "skip" ? "skipped" : kind === "reject" ? "marked: can't tell" : `✓ ${value}`);
    if (item.src) URL.revokeObjectURL(item.src);
    state.current = null;
    const nxt = state.next;
    state.next = null;
    if (nxt) { show(nxt); preload(); } else { state.busy = false; await fill(); }
    showRate();
    refreshCounts();
  } catch (e) {
    flash(e.message, true);
    if (/answered already|another reviewer|lock/.test(e.message)) { state.current = null; state.busy = false; await fill(); }
  } finally { state.busy = false; }
}

function accept() {
  const typed = $("typed").value.trim();
  if (typed) return act("answer", typed);
  const c = state.current && state.current.candidates[state.picked];
  if (c) return act("answer", c.label);
  flash("pick a candidate or type a label", true);
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
function flash(text, bad) {
  $("flash").textContent = text;
  $("flash").classList.toggle("bad", !!bad);
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { $("flash").textContent = ""; }, 2500);
}

// -- keys -----------------------------------------------------------------------------------------------
document.addEventListener("keydown", (ev) => {
  if (!client.token || $("workspace").hidden) return;
  const typing = document.activeElement === $("typed");
  if (typing) {
    if (ev.key === "Escape") { $("typed").blur(); ev.preventDefault(); }
    return; // Enter in the box submits the form
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "?") { $("help").hidden = !$("help").hidden; ev.preventDefault(); return; }
  if (ev.key === "Escape") { $("help").hidden = true; return; }
  if (/^[1-9]$/.test(ev.key)) { pick(+ev.key - 1); ev.preventDefault(); }
  else if (ev.key === "Enter") { accept(); ev.preventDefault(); }
  else if (ev.key === "/" || ev.key === "t") { $("typed").focus(); ev.preventDefault(); }
  else if (ev.key === "r") { act("reject"); ev.preventDefault(); }
  else if (ev.key === "s") { act("skip"); ev.preventDefault(); }
});

$("type-form").addEventListener("submit", (ev) => { ev.preventDefault(); $("typed").blur(); accept(); });
$("btn-accept").onclick = accept;
$("btn-reject").onclick = () => act("reject");
$("btn-skip").onclick = () => act("skip");
$("logout").onclick = () => { client.signOut(); showSignIn(); };
signInForm(client, { onSignedIn: start });
window.addEventListener("beforeunload", () => {
  // Hand the preloaded item back so nobody waits for its lock to time out.
  if (state.next && client.token) client.request(`/v1/review/items/${state.next.id}/release`, { method: "POST", keepalive: true });
});

if (client.token) start(); else showSignIn();
