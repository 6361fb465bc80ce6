// Waiting for a helper: the time waited and the place in line on the HUD, spoken updates, keep waiting / cancel.
// The device stream's status events say where the ask stands (state, position, seconds waited, every ~10 s while it is
// offered to helpers); Cancel and Keep waiting are the server's (POST /v1/asks/{id}/cancel and /keep-waiting).

/** The wearer's waits. ``ctx``: els, sim, device (api.js client), watched (asks polled without a stream),
 * streamOpen(), showHud, setStatus, settle, speakText, addLog — the simulator's own. */
export function waitingForHelper(ctx) {
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
      ctx.els.hudWait.hidden = true;
      clearInterval(waitTicker);
      waitTicker = null;
      return;
    }
    const [, w] = entry;
    const s = waitedS(w);
    if (!w.timedOut && s >= LOCAL_TIMEOUT_S && !ctx.streamOpen()) w.timedOut = true;
    const more = waiting.size > 1 ? ` · ${waiting.size - 1} more waiting` : "";
    const ask = w.timedOut && !w.kept;
    const where = place(w);
    const head = ask ? "No helper yet" : w.kept ? "Still waiting" : "Finding a helper";
    ctx.els.waitText.textContent = `${head} · ${clock(s)}${where ? ` · ${where}` : ""}${more}`;
    ctx.els.waitKeep.hidden = !ask;
    ctx.els.hudWait.hidden = false;
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
    if (!w) { ctx.setStatus("asking", ev.status); return; }
    if (Number.isFinite(ev.waited_s) && Math.abs(waitedS(w) - ev.waited_s) > 3) w.since = Date.now() - ev.waited_s * 1000;
    const helperNow = Boolean(ev.with_helper) && !w.withHelper;
    w.position = Number.isFinite(ev.position) ? ev.position : null;
    w.withHelper = Boolean(ev.with_helper);
    ctx.sim.waits.push({ askId, state: ev.state || "", position: w.position, waited: ev.waited_s });
    if (timedOut) {
      if (w.timedOut && !w.kept) { showWaiting(); return; } // told already: only the numbers change
      w.timedOut = true;
      w.kept = false;
      showWaiting();
      ctx.showHud(["No helper has answered yet.", "Still trying: keep waiting,", "or cancel."],
        { question: questions.get(askId) });
      ctx.setStatus("asking", "no helper yet — still waiting");
      if (ctx.els.speak.checked) ctx.speakText(`No helper has answered yet, after ${spokenTime(waitedS(w))}. Still trying.`, null);
      return;
    }
    showWaiting();
    ctx.setStatus("asking", waitingStatus());
    if (helperNow && ctx.els.speak.checked) ctx.speakText("A helper is looking now.", null);
  }
  const spokenTime = (s) => (s < 60 ? `${s} seconds` : `${Math.floor(s / 60)} minute${s >= 120 ? "s" : ""}${s % 60 ? ` ${s % 60} seconds` : ""}`);
  async function keepWaiting() {
    const entry = shownWait();
    if (!entry) return;
    const [askId, w] = entry;
    w.kept = true;
    showWaiting();
    ctx.setStatus("asking", "asking a helper");
    if (ctx.els.speak.checked) ctx.speakText("OK, still waiting for a helper.", null);
    try {
      const now = await ctx.device.api(`/v1/asks/${askId}/keep-waiting`, { method: "POST" });
      if (waiting.get(askId) === w) helperStatus({ ...now, ask_id: askId });
    } catch (err) { /* answered meanwhile (its answer is on its way), or the server is away: the wait goes on */ }
  }
  function stopWaiting(askId) {
    waiting.delete(askId);
    ctx.watched.delete(askId);
    cancelled.add(askId);
    showWaiting();
    ctx.showHud(["Cancelled: you won't hear", "about that one."], { question: questions.get(askId) });
    if (ctx.els.speak.checked) ctx.speakText("Cancelled.", null).then(ctx.settle);
    else ctx.settle();
  }
  async function cancelWaiting() {
    const entry = shownWait();
    if (!entry) return;
    const [askId] = entry;
    stopWaiting(askId);
    // The ask leaves the review queue: no helper spends time on it. An answer already on its way is logged quietly.
    try { await ctx.device.api(`/v1/asks/${askId}/cancel`, { method: "POST" }); } catch (err) { /* answered already */ }
  }
  function watchForHelper(askId) {
    if (ctx.streamOpen()) return; // the stream will bring the answer
    if (ctx.watched.has(askId)) return;
    ctx.watched.add(askId);
    const poll = async () => {
      if (!ctx.watched.has(askId)) return;
      try {
        const rec = await ctx.device.api(`/v1/asks/${askId}`);
        if (rec.final_answer) {
          // An anonymous ask's frame needs no token; with one, an <img> could not send it.
          lateAnswer(askId, rec.final_answer, [rec.final_answer], "human",
            { question: rec.question, thumb: ctx.device.token ? null : rec.frame_url });
          return;
        }
      } catch (err) { /* try again */ }
      setTimeout(poll, 3000);
    };
    setTimeout(poll, 3000);
  }
  async function askedQuestion(askId) {
    if (questions.has(askId)) return questions.get(askId);
    try { questions.set(askId, (await ctx.device.api(`/v1/asks/${askId}`)).question); } catch (err) { return null; }
    return questions.get(askId);
  }
  /** A helper's answer: shown and spoken with the question it answers (quietly logged if the wearer cancelled). */
  async function lateAnswer(askId, text, hud, sourceName, { question = null, thumb = null } = {}) {
    if (answered.has(askId)) return; // the stream and the poller may both bring it
    answered.add(askId);
    ctx.watched.delete(askId);
    const w = waiting.get(askId);
    waiting.delete(askId);
    showWaiting();
    if (question && !questions.has(askId)) questions.set(askId, question);
    question = question || (await askedQuestion(askId));
    const after = w ? ` after ${clock(waitedS(w))}` : "";
    const quiet = cancelled.has(askId);
    ctx.addLog({ id: askId, q: question || "an earlier question", a: text, kind: "human", thumb,
      meta: `${sourceName || "human"} answered${after}${quiet ? " · you had cancelled" : ""}` });
    if (quiet) { ctx.settle(); return; }
    ctx.showHud(hud && hud.length ? hud : [text], { question });
    const spoken = question ? `You asked: ${question} ${text}` : text;
    if (ctx.els.speak.checked) ctx.speakText(spoken, null).then(ctx.settle);
    else ctx.settle();
  }

  return { questions, waiting, cancelled, answered, startWaiting, waitingStatus, helperStatus, keepWaiting,
    cancelWaiting, watchForHelper, lateAnswer };
}
