// The simulator's conversation log, with right/wrong feedback that fits the skill that answered.
import { $ } from "./api.js";

/** The log in ``list``: ``addLog`` puts an entry on top; feedback goes out through ``device`` (an api.js client). */
export function conversationLog({ list, device, sim, uuid }) {
  const els = { log: list };
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

  return { addLog };
}
