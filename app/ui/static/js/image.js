// Image models: pick, drop or choose an example; the original, the heatmap and the overlay side
// by side; the overlay's opacity blends in the browser; the overlay downloads as a PNG.

import {call, examplesPath, modelPath} from "./api.js";
import {$, el} from "./dom.js";

let chosen = null; // {blob, name, url}
let exampleUrls = [];
let onChosen = () => {};

function useImage(blob, name) {
  if (chosen) URL.revokeObjectURL(chosen.url);
  chosen = {blob, name, url: URL.createObjectURL(blob)};
  onChosen();
}

async function loadExamples(info) {
  for (const url of exampleUrls) URL.revokeObjectURL(url);
  exampleUrls = [];
  const box = $("#image-examples");
  box.replaceChildren();
  const listing = await call(examplesPath(info.name));
  for (const example of listing.examples) {
    const blob = await call(example.url);
    if ($("#model").value !== info.name) return; // another model was chosen meanwhile
    const url = URL.createObjectURL(blob);
    exampleUrls.push(url);
    const button = el("button", {type: "button", class: "example", "data-name": example.name},
      el("img", {src: url, alt: ""}), example.name);
    button.addEventListener("click", () => useImage(blob, example.name));
    box.append(button);
  }
  box.hidden = !listing.examples.length;
}

function wireInputs() {
  const file = $("#file");
  file.addEventListener("change", () => {
    if (file.files.length) useImage(file.files[0], file.files[0].name);
  });
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const dropped = event.dataTransfer.files[0];
    if (dropped) useImage(dropped, dropped.name);
  });
  const slider = $("#opacity");
  slider.addEventListener("input", () => {
    $("#overlay").style.opacity = slider.value;
    $("#opacity-value").textContent = Number(slider.value).toFixed(2);
  });
  slider.addEventListener("change", () => composite().catch(() => {}));
}

/** The overlay as shown (original, then the heatmap at the slider's opacity) as a PNG data URI. */
async function composite() {
  const heat = $("#overlay");
  const base = $("#overlay-base");
  await Promise.all([heat.decode(), base.decode()]);
  const canvas = el("canvas", {width: heat.naturalWidth, height: heat.naturalHeight});
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff"; // transparent parts of the original show over white, as on the server
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.drawImage(base, 0, 0, canvas.width, canvas.height);
  context.globalAlpha = Number($("#opacity").value);
  context.drawImage(heat, 0, 0);
  const link = $("#download");
  link.href = canvas.toDataURL("image/png");
  link.dataset.alpha = Number($("#opacity").value).toFixed(2);
}

export const imageMode = {
  kind: "image",
  init(changed) {
    onChosen = changed;
    wireInputs();
  },
  async setup(info) {
    chosen = null;
    $("#file").value = "";
    await loadExamples(info);
  },
  ready() {
    return chosen !== null;
  },
  missing() {
    return [$("#file"), "choose an image, drop one here, or pick an example"];
  },
  locate(loc, status) {
    if (loc[0] === "instances" || [400, 413, 415].includes(status)) return $("#file");
    return null;
  },
  async explain(common, signal) {
    const form = new FormData();
    form.append("file", chosen.blob, chosen.name);
    form.append("method", common.method);
    form.append("params", JSON.stringify(common.params));
    form.append("outputs", "overlay,heatmap");
    const render = {sign: $("#sign").value, alpha: Number($("#opacity").value)};
    if ($("#colormap").value) render.colormap = $("#colormap").value;
    form.append("render", JSON.stringify(render));
    if (common.top_k) form.append("top_k", String(common.top_k));
    if (common.target !== null) form.append("target", String(common.target));
    return call(modelPath(common.model, "explain"), {form, signal});
  },
  show(answer, request) {
    const explanation = answer.explanations[0];
    $("#original").src = chosen.url;
    $("#overlay-base").src = chosen.url;
    $("#heatmap").src = explanation.heatmap;
    $("#overlay").src = explanation.heatmap;
    $("#overlay").style.opacity = $("#opacity").value;
    const link = $("#download");
    link.href = explanation.overlay; // the service's own blend, at the opacity it was asked for
    link.dataset.alpha = Number($("#opacity").value).toFixed(2);
    link.download = `${chosen.name.replace(/\.[^.]*$/, "")}.${request.method}.overlay.png`;
    $("#image-result").hidden = false;
  },
};
