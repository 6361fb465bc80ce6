/* The dashboard's proposals: names reviewers answered that the catalogue lacks. An operator adds one as a new
 * catalogue item (the model learns it from those answers) or rejects it (its answers never become a class). */
import { $, SignedOut } from "./api.js";

const FRAMES_SHOWN = 3;

/** Loads and draws the proposals into #proposals; ``api`` is the dashboard's signed-in client call. */
export async function loadProposals(api) {
  const box = $("proposals");
  try {
    drawProposals(api, box, await api("/v1/operators/proposals"));
  } catch (err) {
    if (!(err instanceof SignedOut)) $("proposals-done").textContent = "Could not load the proposals: " + err.message;
  }
}

function drawProposals(api, box, list) {
  box.replaceChildren();
  box.dataset.count = String(list.length);
  if (!list.length) {
    const p = document.createElement("p");
    p.className = "muted small";
    p.textContent = "No proposals: every answer named a catalogue item.";
    box.appendChild(p);
    return;
  }
  for (const prop of list) box.appendChild(proposalRow(api, prop));
}

function proposalRow(api, prop) {
  const row = document.createElement("form");
  row.className = "proposal";
  row.dataset.name = prop.name;
  const head = document.createElement("div");
  head.className = "proposal-head";
  const name = document.createElement("strong");
  name.textContent = prop.display_name;
  const n = document.createElement("span");
  n.className = "muted small";
  n.textContent = ` ${prop.answers} answer${prop.answers === 1 ? "" : "s"} on ${prop.asks} ask${prop.asks === 1 ? "" : "s"}`
    + (prop.authors.length ? ` · by ${prop.authors.join(", ")}` : "");
  head.append(name, n);
  const frames = document.createElement("div");
  frames.className = "proposal-frames";
  for (const url of prop.example_frames.slice(0, FRAMES_SHOWN)) {
    const img = document.createElement("img");
    img.alt = `a redacted frame answered “${prop.display_name}”`;
    img.height = 72;
    api(url).then((blob) => { img.src = URL.createObjectURL(blob); }).catch(() => { img.alt = "(frame gone)"; });
    frames.appendChild(img);
  }
  const label = (text, input) => {
    const l = document.createElement("label");
    l.className = "small";
    l.append(text + " ", input);
    return l;
  };
  const itemName = Object.assign(document.createElement("input"), { value: prop.display_name, required: true });
  itemName.setAttribute("aria-label", `catalogue name for ${prop.display_name}`);
  const price = Object.assign(document.createElement("input"), { type: "number", min: "0", step: "0.01", placeholder: "optional" });
  price.setAttribute("aria-label", `price of ${prop.display_name}`);
  const approve = Object.assign(document.createElement("button"), { type: "submit", className: "small", textContent: "Add to catalogue" });
  const reject = Object.assign(document.createElement("button"), { type: "button", className: "small secondary", textContent: "Reject" });
  approve.setAttribute("aria-label", `Add ${prop.display_name} to the catalogue`);
  reject.setAttribute("aria-label", `Reject ${prop.display_name}`);
  const actions = document.createElement("div");
  actions.className = "proposal-actions";
  actions.append(label("name", itemName), label("price", price), approve, reject);
  row.append(head, frames, actions);
  row.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { name: prop.name };
    if (price.value !== "") body.price = Number(price.value);
    if (itemName.value.trim() && itemName.value.trim() !== prop.display_name) body.name = itemName.value.trim();
    await act(api, "/v1/operators/proposals/approve", body,
      (out) => `Added ${out.item.name.replace(/[-_]/g, " ")} to the catalogue: ${out.learnt} of ${out.labels} answers taught the model now; the head learns it on the next train.`);
  });
  reject.addEventListener("click", () => act(api, "/v1/operators/proposals/reject", { name: prop.name },
    (out) => `Rejected ${prop.display_name}: ${out.rejected} answer${out.rejected === 1 ? "" : "s"} will never become a class.`));
  return row;
}

async function act(api, path, body, said) {
  const done = $("proposals-done");
  try {
    const out = await api(path, { method: "POST", json: body });
    done.textContent = said(out);
  } catch (err) {
    if (!(err instanceof SignedOut)) done.textContent = "Failed: " + err.message;
  }
  await loadProposals(api);
}
