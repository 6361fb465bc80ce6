// The glasses simulator: camera + push-to-talk in, HUD + speech out, never silent.
// Vanilla JS, no build step. window.__sim exposes state for the browser test.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    camera: $("camera"), still: $("still"), nocam: $("nocam"), hud: $("hud"), sharp: $("sharp"),
    talk: $("talk"), level: $("level").firstElementChild, status: $("status"), typed: $("typed"),
    question: $("question"), token: $("token"), saveToken: $("save-token"), forgetToken: $("forget-token"),
    useWebcam: $("use-webcam"), upload: $("upload"), language: $("language"), speak: $("speak"),
    log: $("log"), voice: $("voice"), streamDot: $("stream-dot"), streamLabel: $("stream-label"),
    outbox: $("outbox"), heard: $("heard"),
  };
  const HUD_LINES = 5;
  const HUD_CHARS = 34; // about what fits on a 480 px line
  const OUTBOX_KEY = "lookloop.sim.outbox";
  const sim = { spoken: [], statuses: [], asks: [], events: [], lastAnswer: null };
  window.__sim = sim;

  // -- status: something is always on screen -------------------------------------------------------
  const STATES = {
    ready: "ready", listening: "listening", thinking: "thinking", speaking: "speaking",
    asking: "asking a helper", offline: "offline — will send", error: "",
  };
  let waitingForHelper = 0;
  function setStatus(state, text) {
    const label = text || STATES[state] || state;
    els.status.dataset.state = state;
    els.status.textContent = label;
    sim.statuses.push(label);
  }
  function settle() {
    if (pendingOutbox().length) setStatus("offline");
    else if (waitingForHelper > 0) setStatus("asking");
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
  function showHud(lines) {
    const flat = [];
    for (const l of lines) flat.push(...wrap(l, HUD_CHARS));
    const nodes = els.hud.querySelectorAll(".hud-line");
    nodes.forEach((node, i) => { node.textContent = flat[i] || ""; });
    els.hud.classList.remove("flash");
    void els.hud.offsetWidth; // restart the animation
    els.hud.classList.add("flash");
  }

  // -- camera: webcam, or an uploaded photo/video ---------------------------------------------------
  let source = null; // the element frames are taken from
  async function useWebcam() {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 } });
      els.camera.srcObject = stream;
      els.camera.hidden = false; els.still.hidden = true; els.nocam.hidden = true;
      await els.camera.play().catch(() => {});
      source = els.camera;
    } catch (err) {
      els.nocam.hidden = false;
      source = null;
    }
  }
  function useUpload(file) {
    const url = URL.createObjectURL(file);
    if (file.type.startsWith("video/")) {
      if (els.camera.srcObject) els.camera.srcObject.getTracks().forEach((t) => t.stop());
      els.camera.srcObject = null;
      els.camera.src = url; els.camera.loop = true;
      els.camera.hidden = false; els.still.hidden = true; els.nocam.hidden = true;
      els.camera.play().catch(() => {});
      source = els.camera;
    } else {
      els.still.src = url;
      els.still.hidden = false; els.camera.hidden = true; els.nocam.hidden = true;
      source = els.still;
    }
    frames.length = 0;
  }

  // -- frames: keep the last few, send the sharpest (variance of the Laplacian) -----------------------
  const frames = []; // {canvas, score, t}
  const KEEP = 5;
  const score = document.createElement("canvas");
  function sourceSize() {
    if (!source) return null;
    const w = source.videoWidth || source.naturalWidth, h = source.videoHeight || source.naturalHeight;
    return w && h ? [w, h] : null;
  }
  function laplacianVariance(canvas) {
    const w = 160, h = Math.max(1, Math.round(canvas.height * 160 / canvas.width));
    score.width = w; score.height = h;
    const ctx = score.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(canvas, 0, 0, w, h);
    const px = ctx.getImageData(0, 0, w, h).data;
    const g = new Float32Array(w * h);
    for (let i = 0; i < w * h; i++) g[i] = 0.299 * px[4 * i] + 0.587 * px[4 * i + 1] + 0.114 * px[4 * i + 2];
    let sum = 0, sum2 = 0, n = 0;
    for (let y = 1; y < h - 1; y++) {
      for (let x = 1; x < w - 1; x++) {
        const i = y * w + x;
        const v = g[i - 1] + g[i + 1] + g[i - w] + g[i + w] - 4 * g[i];
        sum += v; sum2 += v * v; n++;
      }
    }
    return n ? sum2 / n - (sum / n) ** 2 : 0;
  }
  function grab() {
    const size = sourceSize();
    if (!size) return null;
    const scale = Math.min(1, 1024 / Math.max(size[0], size[1]));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(size[0] * scale); canvas.height = Math.round(size[1] * scale);
    canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
    return { canvas, score: laplacianVariance(canvas), t: performance.now() };
  }
  setInterval(() => {
    const f = grab();
    if (!f) return;
    frames.push(f);
    while (frames.length > KEEP) frames.shift();
    els.sharp.textContent = `frame sharpness ${Math.round(f.score)}`;
  }, 300);
  function sharpestFrame() {
    const latest = grab();
    const pool = latest ? [...frames, latest].slice(-KEEP) : frames.slice(-KEEP);
    if (!pool.length) return null;
    const best = Math.max(...pool.map((f) => f.score));
    // Blurred frames (under 35 % of the best) never win; among the sharp ones the newest near the top does.
    const near = pool.filter((f) => f.score >= 0.9 * best);
    return near[near.length - 1].canvas;
  }
  const toJpeg = (canvas) => new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));

  // -- push-to-talk microphone ----------------------------------------------------------------------
  let micStream = null, recorder = null, chunks = [], pressedAt = 0, meter = null;
  function pickMime() {
    for (const m of ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"]) {
      if (window.MediaRecorder && MediaRecorder.isTypeSupported(m)) return m;
    }
    return "";
  }
  async function startTalking() {
    if (recorder && recorder.state === "recording") return;
    els.talk.classList.add("on");
    setStatus("listening");
    stopSpeaking();
    try {
      if (!micStream) {
        micStream = await navigator.mediaDevices.getUserMedia({
          audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
        });
        startMeter(micStream);
      }
    } catch (err) {
      els.talk.classList.remove("on");
      setStatus("error", "no microphone — type instead");
      return;
    }
    const mime = pickMime();
    recorder = new MediaRecorder(micStream, mime ? { mimeType: mime } : undefined);
    chunks = [];
    recorder.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
    recorder.start();
    pressedAt = performance.now();
  }
  function stopTalking() {
    els.talk.classList.remove("on");
    if (!recorder || recorder.state !== "recording") return;
    const held = performance.now() - pressedAt;
    const rec = recorder;
    rec.onstop = () => {
      const blob = new Blob(chunks, { type: rec.mimeType || "audio/webm" });
      if (held < 350) { setStatus("error", "hold the button while you speak"); return; }
      ask({ audio: blob });
    };
    rec.stop();
    setStatus("thinking");
  }
  function startMeter(stream) {
    try {
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 512;
      ctx.createMediaStreamSource(stream).connect(analyser);
      const buf = new Uint8Array(analyser.fftSize);
      meter = () => {
        analyser.getByteTimeDomainData(buf);
        let peak = 0;
        for (const v of buf) peak = Math.max(peak, Math.abs(v - 128));
        els.level.style.width = recorder && recorder.state === "recording" ? `${Math.min(100, peak * 1.6)}%` : "0";
        requestAnimationFrame(meter);
      };
      requestAnimationFrame(meter);
    } catch (err) { /* the meter is decoration */ }
  }

  // -- talking to the server --------------------------------------------------------------------------
  const token = () => localStorage.getItem("lookloop.token") || "";
  const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});
  const uuid = () => (crypto.randomUUID ? crypto.randomUUID().replace(/-/g, "")
    : Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join(""));

  async function ask({ audio = null, question = null }) {
    const canvas = sharpestFrame();
    const image = canvas ? await toJpeg(canvas) : null;
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
      res = await fetch(url, { method: "POST", body: form, headers: { ...authHeaders(), "Idempotency-Key": item.key } });
    } catch (err) {
      res = null; // the network is down or the server is away
    }
    if (!res || [502, 503, 504, 429].includes(res.status)) {
      if (live) await keepForLater(item, audio, image);
      return false;
    }
    const body = await res.json().catch(() => ({ detail: res.statusText }));
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
    showHud(answer.hud && answer.hud.length ? answer.hud.slice(0, HUD_LINES) : [answer.text]);
    const escalated = answer.decision === "escalate";
    addLog({ id: askRec.id, q: heard, a: answer.text, kind: escalated ? "escalate" : "answer",
      meta: `${answer.skill} · ${Math.round(answer.confidence * 100)}%${live ? "" : " · sent from the outbox"}` });
    if (escalated) {
      waitingForHelper++;
      watchForHelper(askRec.id);
    }
    const after = () => (escalated ? setStatus("asking") : settle());
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
    const res = await fetch(`/v1/tts?text=${encodeURIComponent(text)}&language=${lang}`, { headers: authHeaders() });
    if (!res.ok) throw new Error(`tts ${res.status}`);
    return URL.createObjectURL(await res.blob());
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
  let ws = null, wsBackoff = 1000;
  const watched = new Set();
  function connectStream() {
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    if (!token()) { streamState("none"); return; }
    streamState("wait");
    const proto = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${proto}://${location.host}/v1/devices/stream?token=${encodeURIComponent(token())}`);
    ws.onopen = () => { wsBackoff = 1000; streamState("on"); flushOutbox(); };
    ws.onmessage = (e) => {
      let ev;
      try { ev = JSON.parse(e.data); } catch (err) { return; }
      sim.events.push(ev);
      if (ev.type === "answer") lateAnswer(ev.ask_id, ev.text, ev.hud, ev.source);
      else if (ev.type === "status" && ev.status) setStatus("asking", ev.status);
    };
    ws.onclose = (e) => {
      ws = null;
      if (e.code === 4401 || e.code === 4403) { streamState("refused"); return; }
      streamState("wait");
      setTimeout(connectStream, wsBackoff);
      wsBackoff = Math.min(15000, wsBackoff * 2);
    };
  }
  function streamState(s) {
    els.streamDot.className = "dot" + (s === "on" ? " on" : s === "wait" ? " wait" : "");
    els.streamLabel.textContent = { on: "live answers on", wait: "connecting…", none: "anonymous · no stream",
      refused: "token refused" }[s];
  }
  function watchForHelper(askId) {
    if (token() && ws) return; // the stream will bring the answer
    if (watched.has(askId)) return;
    watched.add(askId);
    const poll = async () => {
      if (!watched.has(askId)) return;
      try {
        const res = await fetch(`/v1/asks/${askId}`, { headers: authHeaders() });
        if (res.ok) {
          const rec = await res.json();
          if (rec.final_answer) { lateAnswer(askId, rec.final_answer, [rec.final_answer], "human"); return; }
        }
      } catch (err) { /* try again */ }
      setTimeout(poll, 3000);
    };
    setTimeout(poll, 3000);
  }
  function lateAnswer(askId, text, hud, sourceName) {
    watched.delete(askId);
    waitingForHelper = Math.max(0, waitingForHelper - 1);
    showHud(hud && hud.length ? hud : [text]);
    addLog({ id: askId, q: "helper answered", a: text, kind: "human", meta: sourceName || "human" });
    if (els.speak.checked) speakText(text, null).then(settle);
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

  // -- the conversation log with right/wrong feedback ----------------------------------------------------
  function addLog({ id, q, a, kind, meta }) {
    const li = document.createElement("li");
    li.className = kind;
    const qd = document.createElement("div"); qd.className = "q"; qd.textContent = `“${q}”`;
    const ad = document.createElement("div"); ad.className = "a"; ad.textContent = a;
    const md = document.createElement("div"); md.className = "meta"; md.textContent = meta;
    if (kind === "answer" || kind === "escalate") {
      for (const [label, verdict] of [["✓ right", "right"], ["✗ wrong", "wrong"]]) {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = label; b.title = `the answer was ${verdict}`;
        b.onclick = () => feedback(id, verdict, md);
        md.append(b);
      }
    }
    li.append(qd, ad, md);
    els.log.append(li);
  }
  async function feedback(askId, verdict, where) {
    let correction = null;
    if (verdict === "wrong") correction = prompt("What is it really? (optional)") || null;
    const res = await fetch(`/v1/asks/${askId}/feedback`, {
      method: "POST", headers: { ...authHeaders(), "Content-Type": "application/json", "Idempotency-Key": uuid() },
      body: JSON.stringify({ verdict, correction }),
    }).catch(() => null);
    where.textContent = res && res.ok ? `thanks — marked ${verdict}` : "feedback not sent";
  }

  // -- wiring -------------------------------------------------------------------------------------------
  els.talk.addEventListener("pointerdown", (e) => { e.preventDefault(); startTalking(); });
  els.talk.addEventListener("pointerup", stopTalking);
  els.talk.addEventListener("pointerleave", () => { if (recorder && recorder.state === "recording") stopTalking(); });
  document.addEventListener("keydown", (e) => {
    if (e.code === "Space" && !e.repeat && !/INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)) {
      e.preventDefault(); startTalking();
    }
  });
  document.addEventListener("keyup", (e) => {
    if (e.code === "Space" && !/INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)) {
      e.preventDefault(); stopTalking();
    }
  });
  els.typed.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = els.question.value.trim();
    if (!q) return;
    els.question.value = "";
    ask({ question: q });
  });
  els.useWebcam.addEventListener("click", useWebcam);
  els.upload.addEventListener("change", () => { if (els.upload.files[0]) useUpload(els.upload.files[0]); });
  els.saveToken.addEventListener("click", () => {
    localStorage.setItem("lookloop.token", els.token.value.trim());
    connectStream();
  });
  els.forgetToken.addEventListener("click", () => {
    localStorage.removeItem("lookloop.token"); els.token.value = ""; connectStream();
  });
  const savedLang = localStorage.getItem("lookloop.language");
  if (savedLang !== null) els.language.value = savedLang;
  els.language.addEventListener("change", () => localStorage.setItem("lookloop.language", els.language.value));
  window.addEventListener("online", flushOutbox);

  els.token.value = token();
  showHud(["lookloop", "Hold to talk and ask", "about what you see."]);
  saveOutbox(pendingOutbox());
  setStatus("ready");
  connectStream();
  useWebcam();
  sim.ready = true;
})();
