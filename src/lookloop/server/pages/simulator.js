// The glasses simulator: camera + push-to-talk in, HUD + speech out, never silent.
// Plain ES modules, no build step. window.__sim exposes state for the browser test.
import { $, apiClient } from "./api.js";
import { conversationLog } from "./simulator-log.js";
import { waitingForHelper } from "./simulator-waiting.js";
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

// -- waiting for a helper (simulator-waiting.js) ----------------------------------------------------------------
const { questions, waiting, startWaiting, waitingStatus, helperStatus, keepWaiting, cancelWaiting, watchForHelper,
  lateAnswer } = waitingForHelper({
  els, sim, device, watched, streamOpen: () => Boolean(device.token && ws), showHud, setStatus, settle, speakText,
  addLog: (...args) => addLog(...args), // the log is made further down
});

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

// -- the conversation log with feedback that fits the skill (simulator-log.js) ----------------------------------
const { addLog } = conversationLog({ list: els.log, device, sim, uuid });

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
