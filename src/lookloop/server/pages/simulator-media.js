// The simulator's senses: the camera (webcam, or an uploaded photo or video) and the push-to-talk microphone.

/** The camera; frames are sampled every 300 ms and an ask sends the sharpest recent one (variance of the Laplacian). */
export function camera(els) {
  let source = null; // the element frames are taken from
  const frames = []; // {canvas, score, t}
  const KEEP = 5;
  const score = document.createElement("canvas");

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

  /** The frame to send, as a JPEG Blob; null without a camera or a photo. */
  async function sharpestJpeg() {
    const latest = grab();
    const pool = latest ? [...frames, latest].slice(-KEEP) : frames.slice(-KEEP);
    if (!pool.length) return null;
    const best = Math.max(...pool.map((f) => f.score));
    // Blurred frames (under 90 % of the best) never win; among the sharp ones the newest does.
    const near = pool.filter((f) => f.score >= 0.9 * best);
    const canvas = near[near.length - 1].canvas;
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
  }

  return { useWebcam, useUpload, sharpestJpeg };
}

/**
 * Push-to-talk: start() on press, stop() on release. `onStart()` when listening begins, `onClip(blob)` with what was
 * said, `onProblem(text)` when there is no microphone or the button was let go too soon.
 */
export function microphone(els, { onStart, onClip, onProblem }) {
  let micStream = null, recorder = null, chunks = [], pressedAt = 0;
  const recording = () => !!recorder && recorder.state === "recording";

  function pickMime() {
    for (const m of ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm"]) {
      if (window.MediaRecorder && MediaRecorder.isTypeSupported(m)) return m;
    }
    return "";
  }

  async function start() {
    if (recording()) return;
    els.talk.classList.add("on");
    onStart();
    try {
      if (!micStream) {
        micStream = await navigator.mediaDevices.getUserMedia({
          audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
        });
        startMeter(micStream);
      }
    } catch (err) {
      els.talk.classList.remove("on");
      onProblem("no microphone — type instead");
      return;
    }
    const mime = pickMime();
    recorder = new MediaRecorder(micStream, mime ? { mimeType: mime } : undefined);
    chunks = [];
    recorder.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
    recorder.start();
    pressedAt = performance.now();
  }

  /** Ends the recording; true when there was one (the clip follows through onClip). */
  function stop() {
    els.talk.classList.remove("on");
    if (!recording()) return false;
    const held = performance.now() - pressedAt;
    const rec = recorder;
    rec.onstop = () => {
      const blob = new Blob(chunks, { type: rec.mimeType || "audio/webm" });
      if (held < 350) { onProblem("hold the button while you speak"); return; }
      onClip(blob);
    };
    rec.stop();
    return true;
  }

  function startMeter(stream) {
    try {
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 512;
      ctx.createMediaStreamSource(stream).connect(analyser);
      const buf = new Uint8Array(analyser.fftSize);
      const meter = () => {
        analyser.getByteTimeDomainData(buf);
        let peak = 0;
        for (const v of buf) peak = Math.max(peak, Math.abs(v - 128));
        els.level.style.width = recording() ? `${Math.min(100, peak * 1.6)}%` : "0";
        requestAnimationFrame(meter);
      };
      requestAnimationFrame(meter);
    } catch (err) { /* the meter is decoration */ }
  }

  return { start, stop, recording };
}
