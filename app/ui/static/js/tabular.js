// Tabular models: a form generated from the model's features, prefilled with an example row or
// a pasted JSON row; the signed contributions as ranked bars with their values; the summary.

import {call, examplesPath, modelPath} from "./api.js";
import {$, el, field, formatNumber} from "./dom.js";
import {clearErrors, fieldError} from "./errors.js";

let features = [];
let rows = []; // example rows: {label, row}

function inputs() {
  return [...$("#features").querySelectorAll("input")];
}

function buildForm(info) {
  features = info.features.map((f) => f.name);
  const fieldset = $("#features");
  fieldset.replaceChildren(fieldset.querySelector("legend"), ...features.map((name, index) => {
    const input = el("input", {type: "number", step: "any", inputmode: "decimal", "data-feature": name});
    return field(`feature-${index}`, name, input);
  }));
}

/** Fills the form from a row (object by feature name, or array in feature order); answers the problems. */
function fill(row) {
  const values = Array.isArray(row) ? row : features.map((name) => row[name]);
  const problems = [];
  if (Array.isArray(row) && row.length !== features.length) {
    problems.push(`the array has ${row.length} values for ${features.length} features`);
  }
  if (!Array.isArray(row)) {
    const unknown = Object.keys(row).filter((name) => !features.includes(name));
    if (unknown.length) problems.push(`unknown feature${unknown.length > 1 ? "s" : ""}: ${unknown.join(", ")}`);
  }
  if (problems.length) return problems;
  inputs().forEach((input, index) => {
    const value = values[index];
    input.value = typeof value === "number" ? String(value) : "";
  });
  return [];
}

async function loadExamples(info) {
  rows = [];
  const listing = await call(examplesPath(info.name));
  for (const example of listing.examples) {
    const data = await call(example.url);
    if ($("#model").value !== info.name) return; // another model was chosen meanwhile
    data.instances.forEach((row, index) => rows.push({label: `${example.name}, row ${index + 1}`, row}));
  }
  const select = $("#example-row");
  select.replaceChildren(...rows.map((entry, index) => el("option", {value: index}, entry.label)));
  $("#example-row-field").hidden = !rows.length;
  if (rows.length) fill(rows[0].row);
}

function pasted() {
  const area = $("#json-row");
  clearErrors();
  let data;
  try {
    data = JSON.parse(area.value);
  } catch (error) {
    fieldError(area, `not valid JSON: ${error.message}`);
    return false;
  }
  if (data && Array.isArray(data.instances)) data = data.instances[0];
  if (data === null || typeof data !== "object") {
    fieldError(area, "give an object by feature name, or an array in feature order");
    return false;
  }
  const problems = fill(data);
  if (problems.length) fieldError(area, problems.join("; "));
  return !problems.length;
}

function bar(attribution, largest) {
  const width = largest > 0 ? (50 * Math.abs(attribution)) / largest : 0;
  const fill = el("span", {class: `fill ${attribution >= 0 ? "up" : "down"}`});
  fill.style.width = `${width}%`;
  return el("div", {class: "track", "aria-hidden": "true"}, fill);
}

export const tabularMode = {
  kind: "tabular",
  init(changed) {
    $("#example-row").addEventListener("change", (event) => {
      fill(rows[Number(event.target.value)].row);
      changed();
    });
    $("#json-apply").addEventListener("click", () => {
      if (pasted()) changed();
    });
  },
  async setup(info) {
    buildForm(info);
    $("#json-row").value = "";
    await loadExamples(info);
  },
  ready() {
    return true;
  },
  missing() {
    return [null, ""];
  },
  locate(loc) {
    if (loc[0] !== "instances" || loc.length < 3) return null;
    const key = loc[2];
    const index = typeof key === "number" ? key : features.indexOf(key);
    return index >= 0 ? document.getElementById(`feature-${index}`) : null;
  },
  explain(common, signal) {
    const row = {};
    for (const input of inputs()) {
      if (input.value.trim() !== "") row[input.dataset.feature] = Number(input.value);
    }
    const body = {instances: [row], method: common.method, params: common.params, outputs: ["summary"]};
    if (common.top_k) body.top_k = common.top_k;
    if (common.target !== null) body.target = common.target;
    return call(modelPath(common.model, "explain"), {json: body, signal});
  },
  show(answer) {
    const explanation = answer.explanations[0];
    $("#summary").textContent = explanation.summary || "";
    const ranked = [...explanation.attributions].sort((a, b) => Math.abs(b.attribution) - Math.abs(a.attribution));
    const largest = ranked.length ? Math.abs(ranked[0].attribution) : 0;
    $("#bars tbody").replaceChildren(...ranked.map((a) => el("tr", {"data-feature": a.feature},
      el("th", {scope: "row"}, a.feature),
      el("td", {class: "num"}, formatNumber(a.value, 8)),
      el("td", {class: "num contribution"}, `${a.attribution >= 0 ? "+" : "−"}${formatNumber(Math.abs(a.attribution))}`),
      el("td", {class: "bar"}, bar(a.attribution, largest)))));
    $("#tabular-result").hidden = false;
  },
};
