// The glasses simulator: camera + push-to-talk in, HUD + speech out, never silent.
// Plain ES modules, no build step. window.__sim exposes state for the browser test.
import { $, apiClient } from "./api.js";
import { camera, microphone } from "./simulator-media.js";

const els = {
  camera: $("camera"), still: $("still"), nocam: $("nocam"), hud: $("hud"), sharp: $("sharp"),
  talk: $("talk"), level: $("level").firstElementChild, status: $("status"), typed: $("typed"),
  question: $("question"), token: $("token"), saveToken: $("save-token"), forgetToken: $("forget-token"),
  useWebcam: $("use-webcam"), upload: $("upload"), language: $("language"), speak: $("speak"),
  log: $("log"), voice: $("voice"), streamDot: $("stream-dot"), streamLabel: $("stream-label"),
  outbox: $("outbox"), heard: $("heard"), uploadButton: $("upload-button"), tokenError: $("token-error"),
  hint: $("hint"), view: $("view"), hudWait: $("hud-wait"), waitText: $("wait-text"), waitKeep: $("wait-keep"),
  waitCancel: $("wait-cancel"),
};
const REFUSED = "this device token was refused — check it";
const touchScreen = () => matchMedia("(hover: none), (pointer: coarse)").matches;
const HUD_LINES = 5;
const HUD_CHARS = 34; // about what fits on a 480 px line
const OUTBOX_KEY = "lookloop.sim.outbox";
const sim = { spoken: [], statuses: [], asks: [], events: [], lastAnswer: null, feedback: [], waits: [] };
window.__sim = sim;

// -- status: something is always on screen -------------------------------------------------------
const STATES = {
  ready: "ready", listening: "listening", thinking: "thinking", speaking: "speaking",
  asking: "asking a helper", offline: "offline — will send", error: "",
};
function setStatus(state, text) {
  const label = text || STATES[state] || state;
  els.status.dataset.state = state;
  els.status.textContent = label;
  sim.statuses.push(label);
}
function settle() {
  if (pendingOutbox().length) setStatus("offline");
  else if (waiting.size > 0) setStatus("asking", waitingStatus());
  else setStatus("ready");
}

// -- HUD ---------------------------------------------------------------------------------------------
function wrap(text, width) {
  const out = [];
  let line = "";
  for (const word of String(text).split(/\s+/).filter(Boolean)) {
    if (!line) line = word;
    else if ((line + " " + word).length <= width) line += " " + word;
    else { out.push(line); line = word; }
  }
  if (line) out.push(line);
  return out;
}
/** Shows up to five lines; with `question`, the first line is the question the answer belongs to. */
function showHud(lines, { question = null } = {}) {
  const flat = question ? [`“${question}”`] : [];
  for (const l of lines) flat.push(...wrap(l, HUD_CHARS));
  const nodes = els.hud.querySelectorAll(".hud-line");
  nodes.forEach((node, i) => { node.textContent = flat[i] || ""; });
  els.hud.classList.remove("flash");
  void els.hud.offsetWidth; // restart the animation
  els.hud.classList.add("flash");
  revealHud();
}
/** Brings the glasses' view back on screen (a phone scrolled down to the question box after an ask). */
function revealHud() {
  const r = els.view.getBoundingClientRect();
  if (r.top < 0 || r.bottom > window.innerHeight) {
    const still = matchMedia("(prefers-reduced-motion: reduce)").matches;
    els.view.scrollIntoView({ block: "nearest", behavior: still ? "auto" : "smooth" });
  }
}

// -- camera and push-to-talk (simulator-media.js) ----------------------------------------------------
const cam = camera(els);
const mic = microphone(els, {
  onStart: () => { setStatus("listening"); stopSpeaking(); },
  onClip: (audio) => ask({ audio }),
  onProblem: (text) => setStatus("error", text),
});
const startTalking = () => mic.start();
function stopTalking() {
  if (mic.stop()) setStatus("thinking");
}

// -- talking to the server --------------------------------------------------------------------------
// The device token (optional: without one the simulator asks anonymously) is kept across visits.
const device = apiClient({ tokenKey: "lookloop.token", storage: window.localStorage });
const uuid = () => (crypto.randomUUID ? crypto.randomUUID().replace(/-/g, "")
  : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join(""));

async function ask({ audio = null, question = null }) {
  const image = await cam.sharpestJpeg();
  const item = { key: uuid(), question, language: els.language.value, at: Date.now() };
  setStatus("thinking");
  await send(item, audio, image, true);
}

async function send(item, audio, image, live) {
  const form = new FormData();
  let url = "/v1/asks";
  if (audio) {
    url = "/v1/asks/voice";
    form.append("audio", audio, audio.type.includes("ogg") ? "clip.ogg" : audio.type.includes("wav") ? "clip.wav" : "clip.webm");
    if (item.language) form.append("language", item.language);
    form.append("speak", els.speak.checked ? "true" : "false");
  } else {
    form.append("question", item.question || "what is this?");
  }
  if (image) form.append("image", image, "frame.jpg");
  let res;
  try {
    res = await device.request(url, { method: "POST", body: form, headers: { "Idempotency-Key": item.key } });
  } catch (err) {
    res = null; // the network is down or the server is away
  }
  if (!res || [502, 503, 504, 429].includes(res.status)) {
    if (live) await keepForLater(item, audio, image);
    return false;
  }
  const body = await res.json().catch(() => ({ detail: res.statusText }));
  if (res.status === 401 && device.token) {
    tokenRefused();
    if (live) speakText("This device's token was refused. Check it, or forget it to ask without one.", null);
    return true;
  }
  if (!res.ok) {
    const said = body.detail || "something went wrong";
    showHud([res.status === 422 && /speech/.test(said) ? "Didn't catch that." : "Can't answer that:", said]);
    setStatus("error", res.status === 422 && /speech/.test(said) ? "didn't catch that — try again" : "couldn't ask");
    if (live) speakText(res.status === 422 && /speech/.test(said) ? "Sorry, I didn't catch that." : said, null);
    return true; // refused for good: never resend
  }
  handleAnswer(body, item, live);
  return true;
}

function handleAnswer(body, item, live) {
  const askRec = body.ask || body;
  const answer = askRec.answer;
  const heard = body.transcript ? body.transcript.text : askRec.question;
  sim.asks.push(body);
  els.heard.textContent = body.transcript ? `You said: “${heard}”` : "";
  sim.lastAnswer = answer;
  questions.set(askRec.id, heard);
  showHud(answer.hud && answer.hud.length ? answer.hud.slice(0, HUD_LINES) : [answer.text]);
  const escalated = answer.decision === "escalate";
  addLog({ id: askRec.id, q: heard, a: answer.text, kind: escalated ? "escalate" : "answer", answer,
    meta: `${answer.skill} · ${Math.round(answer.confidence * 100)}%${live ? "" : " · sent from the outbox"}` });
  if (escalated) {
    startWaiting(askRec.id, item.at || Date.now());
    watchForHelper(askRec.id);
  }
  const after = () => (escalated && waiting.has(askRec.id) ? setStatus("asking", waitingStatus()) : settle());
  if (els.speak.checked) {
    speakText(answer.text, body.audio_url || null).then(after);
  } else {
    after();
  }
}

// -- speech out: the server's TTS audio, the browser's voice only if that fails ----------------------
let speaking = Promise.resolve();
function stopSpeaking() {
  els.voice.pause();
  if (window.speechSynthesis) window.speechSynthesis.cancel();
}
function playUrl(url) {
  return new Promise((resolve, reject) => {
    const v = els.voice;
    const done = () => { cleanup(); resolve(true); };
    const fail = () => { cleanup(); reject(new Error("audio failed")); };
    const cleanup = () => { v.removeEventListener("ended", done); v.removeEventListener("error", fail); };
    v.addEventListener("ended", done);
    v.addEventListener("error", fail);
    v.src = url;
    v.play().then(() => setStatus("speaking")).catch(fail);
  });
}
async function ttsUrl(text) {
  const lang = /[\u3400-\u9fff]/.test(text) ? "zh" : "en";
  return URL.createObjectURL(await device.api(`/v1/tts?text=${encodeURIComponent(text)}&language=${lang}`));
}
function browserVoice(text) {
  return new Promise((resolve) => {
    if (!window.speechSynthesis) { resolve(false); return; }
    const u = new SpeechSynthesisUtterance(text);
    u.onend = () => resolve(true);
    u.onerror = () => resolve(false);
    setStatus("speaking");
    window.speechSynthesis.speak(u);
    setTimeout(() => resolve(false), 15000);
  });
}
function speakText(text, url) {
  speaking = speaking.then(async () => {
    const entry = { text, url, via: "server", played: false };
    sim.spoken.push(entry);
    try {
      entry.url = url || (await ttsUrl(text));
      entry.played = await playUrl(entry.url);
    } catch (err) {
      entry.via = "browser";
      entry.played = await browserVoice(text);
    }
  });
  return speaking;
}

// -- late answers: the device stream with a token, polling an anonymous ask without ------------------
let ws = null, wsBackoff = 1000, wsTimer = null;
const watched = new Set();
function connectStream() {
  clearTimeout(wsTimer);
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  if (!device.token) { streamState("none"); return; }
  streamState("wait");
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${proto}://${location.host}/v1/devices/stream?token=${encodeURIComponent(device.token)}`);
  let opened = false;
  ws = socket;
  socket.onopen = () => { opened = true; wsBackoff = 1000; streamState("on"); flushOutbox(); };
  socket.onmessage = (e) => {
    let ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    sim.events.push(ev);
    if (ev.type === "answer") {
      lateAnswer(ev.ask_id, ev.text, ev.hud, ev.source, { question: ev.question, thumb: ev.thumbnail_url });
    } else if (ev.type === "status" && ev.status) helperStatus(ev);
  };
  socket.onclose = async (e) => {
    if (ws === socket) ws = null;
    if (e.code === 4401 || e.code === 4403) { tokenRefused(e.code === 4403 ? e.reason : ""); return; }
    // A refused handshake reaches the page as a bare close (1006) before it ever opened: ask the API why.
    if (!opened) {
      const why = await tokenProblem();
      if (why !== null) { tokenRefused(why); return; }
    }
    streamState("wait");
    wsTimer = setTimeout(connectStream, wsBackoff);
    wsBackoff = Math.min(15000, wsBackoff * 2);
  };
}
/** Why the server refuses the device token ("" for a plain refusal), or null when it is fine or unknown. */
async function tokenProblem() {
  let res;
  try { res = await device.request("/v1/auth/me"); } catch (err) { return null; } // the server is away
  if (res.status === 401) return "";
  if (res.status === 403) return (await res.json().catch(() => ({}))).detail || "";
  if (!res.ok) return null;
  const me = await res.json().catch(() => ({}));
  return me.kind && me.kind !== "device" ? "that is a person's sign-in token, not a device token" : null;
}
function tokenRefused(detail = "") {
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  clearTimeout(wsTimer);
  streamState("refused");
  els.tokenError.textContent = detail ? `${REFUSED} (${detail})` : REFUSED;
  showHud(["Device token refused.", "Check it, or forget it to", "ask without one."]);
  setStatus("error", "device token refused");
}
function streamState(s) {
  els.streamDot.className = "dot" + (s === "on" ? " on" : s === "wait" ? " wait" : s === "refused" ? " bad" : "");
  els.streamLabel.textContent = { on: "live answers on", wait: "connecting…", none: "anonymous · no stream",
    refused: "token refused" }[s];
  if (s !== "refused") els.tokenError.textContent = "";
}

// -- waiting for a helper: the time waited and the place in line on the HUD, spoken updates, keep waiting / cancel ---
// The device stream's status events say where the ask stands (state, position, seconds waited, every ~10 s while it is
// offered to helpers); Cancel and Keep waiting are the server's (POST /v1/asks/{id}/cancel and /keep-waiting).
const questions = new Map(); // ask id → the question as asked: every late answer shows what it answers
const waiting = new Map(); // ask id → { since, timedOut, kept, position, withHelper }
const cancelled = new Set();
const answered = new Set();
const LOCAL_TIMEOUT_S = 60; // without the stream's word, offer "keep waiting" after this long
let waitTicker = null;
const clock = (s) => `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
const waitedS = (w) => Math.max(0, Math.floor((Date.now() - w.since) / 1000));
function ordinal(n) {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  return n + (teen ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th");
}

function startWaiting(askId, since) {
  if (cancelled.has(askId) || answered.has(askId)) return;
  if (!waiting.has(askId)) waiting.set(askId, { since, timedOut: false, kept: false, position: null, withHelper: false });
  showWaiting();
}
/** The ask whose wait the HUD shows: the latest one. */
function shownWait() {
  let last = null;
  for (const entry of waiting) last = entry;
  return last;
}
function waitingStatus() {
  const entry = shownWait();
  if (!entry) return "asking a helper";
  const w = entry[1];
  if (w.timedOut && !w.kept) return "no helper yet — still waiting";
  return w.withHelper ? "a helper is looking" : "asking a helper";
}
/** Where the ask stands in line, in words ("you're next", "3rd in line", "a helper is looking"). */
function place(w) {
  if (w.withHelper) return "a helper is looking";
  if (!w.position) return "";
  return w.position === 1 ? "you're next" : `${ordinal(w.position)} in line`;
}
function showWaiting() {
  const entry = shownWait();
  if (!entry) {
    els.hudWait.hidden = true;
    clearInterval(waitTicker);
    waitTicker = null;
    return;
  }
  const [, w] = entry;
  const s = waitedS(w);
  if (!w.timedOut && s >= LOCAL_TIMEOUT_S && !(device.token && ws)) w.timedOut = true;
  const more = waiting.size > 1 ? ` · ${waiting.size - 1} more waiting` : "";
  const ask = w.timedOut && !w.kept;
  const where = place(w);
  const head = ask ? "No helper yet" : w.kept ? "Still waiting" : "Finding a helper";
  els.waitText.textContent = `${head} · ${clock(s)}${where ? ` · ${where}` : ""}${more}`;
  els.waitKeep.hidden = !ask;
  els.hudWait.hidden = false;
  if (!waitTicker) waitTicker = setInterval(showWaiting, 1000);
}
/** A status event of the device stream: {state: asking | timed_out | cancelled | answered, position, waited_s}. */
function helperStatus(ev) {
  const askId = ev.ask_id;
  if (askId && ev.question && !questions.has(askId)) questions.set(askId, ev.question);
  if (askId && (cancelled.has(askId) || answered.has(askId))) return;
  if (ev.state === "answered") return; // the answer event brings the rest
  if (askId && ev.state === "cancelled") { stopWaiting(askId); return; } // cancelled from another of its screens
  const timedOut = ev.state ? ev.state === "timed_out" : /no helper|still queued|timed? ?out/i.test(ev.status);
  if (askId) {
    const known = Number.isFinite(ev.waited_s) ? Date.now() - ev.waited_s * 1000 : Date.now();
    startWaiting(askId, waiting.has(askId) ? waiting.get(askId).since : known);
  }
  const w = askId && waiting.get(askId);
  if (!w) { setStatus("asking", ev.status); return; }
  if (Number.isFinite(ev.waited_s) && Math.abs(waitedS(w) - ev.waited_s) > 3) w.since = Date.now() - ev.waited_s * 1000;
  const helperNow = Boolean(ev.with_helper) && !w.withHelper;
  w.position = Number.isFinite(ev.position) ? ev.position : null;
  w.withHelper = Boolean(ev.with_helper);
  sim.waits.push({ askId, state: ev.state || "", position: w.position, waited: ev.waited_s });
  if (timedOut) {
    if (w.timedOut && !w.kept) { showWaiting(); return; } // told already: only the numbers change
    w.timedOut = true;
    w.kept = false;
    showWaiting();
    showHud(["No helper has answered yet.", "Still trying: keep waiting,", "or cancel."],
      { question: questions.get(askId) });
    setStatus("asking", "no helper yet — still waiting");
    if (els.speak.checked) speakText(`No helper has answered yet, after ${spokenTime(waitedS(w))}. Still trying.`, null);
    return;
  }
  showWaiting();
  setStatus("asking", waitingStatus());
  if (helperNow && els.speak.checked) speakText("A helper is looking now.", null);
}
const spokenTime = (s) => (s < 60 ? `${s} seconds` : `${Math.floor(s / 60)} minute${s >= 120 ? "s" : ""}${s % 60 ? ` ${s % 60} seconds` : ""}`);
async function keepWaiting() {
  const entry = shownWait();
  if (!entry) return;
  const [askId, w] = entry;
  w.kept = true;
  showWaiting();
  setStatus("asking", "asking a helper");
  if (els.speak.checked) speakText("OK, still waiting for a helper.", null);
  try {
    const now = await device.api(`/v1/asks/${askId}/keep-waiting`, { method: "POST" });
    if (waiting.get(askId) === w) helperStatus({ ...now, ask_id: askId });
  } catch (err) { /* answered meanwhile (its answer is on its way), or the server is away: the wait goes on */ }
}
function stopWaiting(askId) {
  waiting.delete(askId);
  watched.delete(askId);
  cancelled.add(askId);
  showWaiting();
  showHud(["Cancelled: you won't hear", "about that one."], { question: questions.get(askId) });
  if (els.speak.checked) speakText("Cancelled.", null).then(settle);
  else settle();
}
async function cancelWaiting() {
  const entry = shownWait();
  if (!entry) return;
  const [askId] = entry;
  stopWaiting(askId);
  // The ask leaves the review queue: no helper spends time on it. An answer already on its way is logged quietly.
  try { await device.api(`/v1/asks/${askId}/cancel`, { method: "POST" }); } catch (err) { /* answered already */ }
}
function watchForHelper(askId) {
  if (device.token && ws) return; // the stream will bring the answer
  if (watched.has(askId)) return;
  watched.add(askId);
  const poll = async () => {
    if (!watched.has(askId)) return;
    try {
      const rec = await device.api(`/v1/asks/${askId}`);
      if (rec.final_answer) {
        // An anonymous ask's frame needs no token; with one, an <img> could not send it.
        lateAnswer(askId, rec.final_answer, [rec.final_answer], "human",
          { question: rec.question, thumb: device.token ? null : rec.frame_url });
        return;
      }
    } catch (err) { /* try again */ }
    setTimeout(poll, 3000);
  };
  setTimeout(poll, 3000);
}
async function askedQuestion(askId) {
  if (questions.has(askId)) return questions.get(askId);
  try { questions.set(askId, (await device.api(`/v1/asks/${askId}`)).question); } catch (err) { return null; }
  return questions.get(askId);
}
/** A helper's answer: shown and spoken with the question it answers (quietly logged if the wearer cancelled). */
async function lateAnswer(askId, text, hud, sourceName, { question = null, thumb = null } = {}) {
  if (answered.has(askId)) return; // the stream and the poller may both bring it
  answered.add(askId);
  watched.delete(askId);
  const w = waiting.get(askId);
  waiting.delete(askId);
  showWaiting();
  if (question && !questions.has(askId)) questions.set(askId, question);
  question = question || (await askedQuestion(askId));
  const after = w ? ` after ${clock(waitedS(w))}` : "";
  const quiet = cancelled.has(askId);
  addLog({ id: askId, q: question || "an earlier question", a: text, kind: "human", thumb,
    meta: `${sourceName || "human"} answered${after}${quiet ? " · you had cancelled" : ""}` });
  if (quiet) { settle(); return; }
  showHud(hud && hud.length ? hud : [text], { question });
  const spoken = question ? `You asked: ${question} ${text}` : text;
  if (els.speak.checked) speakText(spoken, null).then(settle);
  else settle();
}

// -- the outbox: asks made offline wait in localStorage and are sent once the server is back --------
const blobTo64 = (blob) => new Promise((resolve) => {
  if (!blob) { resolve(null); return; }
  const r = new FileReader();
  r.onload = () => resolve({ type: blob.type, data: String(r.result).split(",")[1] });
  r.readAsDataURL(blob);
});
const b64ToBlob = (o) => (o ? new Blob([Uint8Array.from(atob(o.data), (c) => c.charCodeAt(0))], { type: o.type }) : null);
function pendingOutbox() {
  try { return JSON.parse(localStorage.getItem(OUTBOX_KEY) || "[]"); } catch (err) { return []; }
}
function saveOutbox(list) {
  try { localStorage.setItem(OUTBOX_KEY, JSON.stringify(list.slice(-10))); } catch (err) { /* full: keep fewer */ }
  els.outbox.hidden = !list.length;
  els.outbox.textContent = `${list.length} waiting to send`;
}
async function keepForLater(item, audio, image) {
  const list = pendingOutbox();
  list.push({ ...item, audio: await blobTo64(audio), image: await blobTo64(image) });
  saveOutbox(list);
  showHud(["No connection.", "Your question is saved and", "will be sent when back online."]);
  addLog({ id: item.key, q: item.question || "(voice)", a: "saved — will send", kind: "offline", meta: "offline" });
  setStatus("offline");
}
let flushing = false;
async function flushOutbox() {
  if (flushing) return;
  flushing = true;
  try {
    let list = pendingOutbox();
    while (list.length) {
      const item = list[0];
      const ok = await send(item, b64ToBlob(item.audio), b64ToBlob(item.image), false);
      if (!ok) break; // still away
      list = pendingOutbox().filter((x) => x.key !== item.key);
      saveOutbox(list);
    }
  } finally {
    flushing = false;
  }
  if (!pendingOutbox().length && els.status.dataset.state === "offline") settle();
}
setInterval(() => { if (pendingOutbox().length) flushOutbox(); }, 3000);

// -- the conversation log with right/wrong feedback that fits the skill ------------------------------------------
// "✗ wrong" never opens a browser prompt. identify and price: pick one of the AI's other candidates, or type a
// catalogue name (suggested from GET /v1/catalog); read and translate: edit the text in place; any other skill:
// right or wrong only.
const PRODUCT_SKILLS = new Set(["identify", "price"]);
const TEXT_SKILLS = new Set(["read", "translate"]);
const shownName = (label) => String(label).replace(/[-_]/g, " ");
let fixCount = 0;

function addLog({ id, q, a, kind, meta, answer = null, thumb = null }) {
  const li = document.createElement("li");
  li.className = kind;
  li.dataset.ask = id;
  const qd = document.createElement("div"); qd.className = "q"; qd.textContent = `“${q}”`;
  const ad = document.createElement("div"); ad.className = "a"; ad.textContent = a;
  const md = document.createElement("div"); md.className = "meta"; md.textContent = meta;
  if (thumb) {
    const img = document.createElement("img");
    img.className = "thumb";
    img.src = thumb;
    img.alt = "what you asked about";
    li.append(img);
  }
  if (kind === "answer" || kind === "escalate") {
    const right = feedbackButton("✓ right", "the answer was right");
    right.onclick = () => feedback(id, "right", null, md, { skill: answer && answer.skill });
    const wrong = feedbackButton("✗ wrong", "the answer was wrong");
    wrong.setAttribute("aria-expanded", "false");
    wrong.onclick = () => wrongAnswer(li, id, answer, md, wrong);
    md.append(right, wrong);
  }
  li.append(qd, ad, md);
  // Newest first, and the list scrolled to the top: the latest answer is where the eye is.
  els.log.prepend(li);
  els.log.scrollTop = 0;
}
function feedbackButton(text, title) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = text; b.title = title;
  return b;
}

/** "✗ wrong": what comes next depends on the skill that answered. */
function wrongAnswer(li, askId, answer, where, button) {
  const skill = answer ? answer.skill : "";
  if (!PRODUCT_SKILLS.has(skill) && !TEXT_SKILLS.has(skill)) { feedback(askId, "wrong", null, where, { skill }); return; }
  const open = li.querySelector(".fix");
  if (open) { closeFix(open, button); return; }
  const panel = PRODUCT_SKILLS.has(skill) ? productFix(askId, answer, where) : textFix(askId, answer, where);
  panel.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); closeFix(panel, button); } });
  li.append(panel);
  button.setAttribute("aria-expanded", "true");
  (panel.querySelector(".pick") || panel.querySelector("input, textarea")).focus();
}
function closeFix(panel, button) {
  panel.remove();
  button.setAttribute("aria-expanded", "false");
  button.focus();
}
function fixPanel(title) {
  const panel = document.createElement("form");
  panel.className = "fix";
  const id = `fix-title-${++fixCount}`;
  panel.setAttribute("aria-labelledby", id);
  const h = document.createElement("div");
  h.className = "fix-title"; h.id = id; h.textContent = title;
  panel.append(h);
  return panel;
}
function fixActions(panel, sendLabel, onSend, onJustWrong) {
  const row = document.createElement("div");
  row.className = "fix-row";
  const send = feedbackButton(sendLabel, "send the right answer");
  send.type = "submit"; send.className = "send";
  const plain = feedbackButton("just wrong", "say it was wrong without the right answer");
  plain.onclick = onJustWrong;
  row.append(send, plain);
  panel.append(row);
  panel.addEventListener("submit", (e) => { e.preventDefault(); onSend(); });
}

/** identify and price: the AI's other candidates as buttons, and a catalogue name typed with suggestions. */
function productFix(askId, answer, where) {
  const panel = fixPanel("What was it?");
  const said = answer.result && answer.result.label;
  const picks = document.createElement("div");
  picks.className = "picks";
  for (const c of (answer.candidates || []).filter((c) => c.label !== said).slice(0, 3)) {
    const b = feedbackButton(shownName(c.label), `it was ${shownName(c.label)}`);
    b.className = "pick";
    b.onclick = () => feedback(askId, "wrong", c.label, where, { panel, skill: answer.skill });
    picks.append(b);
  }
  if (picks.childElementCount) panel.append(picks);
  const label = document.createElement("label");
  label.className = "fix-field";
  label.textContent = picks.childElementCount ? "or type its name" : "its name";
  const input = document.createElement("input");
  input.type = "text"; input.maxLength = 500; input.autocomplete = "off";
  input.setAttribute("list", catalogList());
  input.addEventListener("input", () => suggest(input.value));
  label.append(input);
  panel.append(label);
  fixActions(panel, "send", () => {
    const name = input.value.trim();
    if (name) feedback(askId, "wrong", name, where, { panel, skill: answer.skill });
    else input.focus();
  }, () => feedback(askId, "wrong", null, where, { panel, skill: answer.skill }));
  suggest("");
  return panel;
}
/** read and translate: the text as the AI gave it, to put right. */
function textFix(askId, answer, where) {
  const panel = fixPanel("Put the text right");
  const label = document.createElement("label");
  label.className = "fix-field";
  label.textContent = "the right text";
  const area = document.createElement("textarea");
  area.rows = Math.min(6, Math.max(2, answer.text.split("\n").length + 1));
  area.maxLength = 500;
  area.value = answer.text;
  label.append(area);
  panel.append(label);
  const send = () => {
    const text = area.value.trim();
    feedback(askId, "wrong", text && text !== answer.text.trim() ? text : null, where, { panel, skill: answer.skill });
  };
  area.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); send(); } });
  fixActions(panel, "send", send, () => feedback(askId, "wrong", null, where, { panel, skill: answer.skill }));
  return panel;
}

// Catalogue names for the typed correction: one <datalist>, filled from GET /v1/catalog?q= as the wearer types.
let catalogTimer = null, catalogAsked = null;
function catalogList() {
  if (!$("catalog-names")) document.body.append(Object.assign(document.createElement("datalist"), { id: "catalog-names" }));
  return "catalog-names";
}
function suggest(text) {
  clearTimeout(catalogTimer);
  catalogTimer = setTimeout(async () => {
    const q = text.trim();
    if (q === catalogAsked) return;
    catalogAsked = q;
    let items = [];
    try { items = await device.api(`/v1/catalog${q ? `?q=${encodeURIComponent(q)}` : ""}`); } catch (err) { return; }
    $("catalog-names").replaceChildren(...items.slice(0, 20).map((i) => Object.assign(document.createElement("option"), {
      value: i.name, label: shownName(i.name) + (i.price != null ? ` · ${i.price.toFixed(2)} ${i.currency}` : ""),
    })));
  }, 150);
}

async function feedback(askId, verdict, correction, where, { panel = null, skill = "" } = {}) {
  const sent = await device.api(`/v1/asks/${askId}/feedback`, {
    method: "POST", json: { verdict, correction }, headers: { "Idempotency-Key": uuid() },
  }).then(() => true, () => false);
  sim.feedback.push({ askId, verdict, correction, sent });
  const hadFocus = panel && panel.contains(document.activeElement);
  if (panel) panel.remove();
  const fixed = correction ? ` — it was ${PRODUCT_SKILLS.has(skill) ? shownName(correction) : `“${correction}”`}` : "";
  where.textContent = sent ? `thanks — marked ${verdict}${fixed}` : "feedback not sent";
  if (hadFocus) { where.tabIndex = -1; where.focus(); } // the keyboard stays on the answer it spoke about
}

// -- wiring -------------------------------------------------------------------------------------------
els.talk.addEventListener("pointerdown", (e) => { e.preventDefault(); startTalking(); });
els.talk.addEventListener("pointerup", stopTalking);
els.talk.addEventListener("pointerleave", () => { if (mic.recording()) stopTalking(); });
// The space bar talks while the focus is on the page or on the talk button; any other control keeps its own keys.
const spaceTalks = () => {
  const el = document.activeElement;
  return !el || el === document.body || el === els.talk;
};
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && !e.repeat && spaceTalks()) { e.preventDefault(); startTalking(); }
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" && (spaceTalks() || mic.recording())) { e.preventDefault(); stopTalking(); }
});
els.typed.addEventListener("submit", (e) => {
  e.preventDefault();
  const q = els.question.value.trim();
  if (!q) return;
  els.question.value = "";
  if (touchScreen()) els.question.blur(); // the on-screen keyboard goes away and the HUD comes back into view
  ask({ question: q });
});
els.useWebcam.addEventListener("click", cam.useWebcam);
els.uploadButton.addEventListener("click", () => els.upload.click());
els.upload.addEventListener("change", () => { if (els.upload.files[0]) cam.useUpload(els.upload.files[0]); });
els.waitKeep.addEventListener("click", keepWaiting);
els.waitCancel.addEventListener("click", cancelWaiting);
els.saveToken.addEventListener("click", () => {
  device.token = els.token.value.trim();
  connectStream();
});
els.forgetToken.addEventListener("click", () => {
  device.token = ""; els.token.value = ""; connectStream();
});
const savedLang = localStorage.getItem("lookloop.language");
if (savedLang !== null) els.language.value = savedLang;
els.language.addEventListener("change", () => localStorage.setItem("lookloop.language", els.language.value));
window.addEventListener("online", flushOutbox);

if (touchScreen()) {
  els.hint.textContent = "Hold the button while you speak, then let go.";
  els.question.placeholder = "…or type a question";
}
els.token.value = device.token;
showHud(["lookloop", "Hold to talk and ask", "about what you see."]);
saveOutbox(pendingOutbox());
setStatus("ready");
connectStream();
cam.useWebcam();
sim.ready = true;
