// The page: models from /v1/models, the method and its parameters, one explanation at a time.

import {ApiError, apiKey, call, setApiKey} from "./api.js";
import {$, el} from "./dom.js";
import {clearErrors, fieldError, showProblem} from "./errors.js";
import {imageMode} from "./image.js";
import {buildParams, readParams} from "./params.js";
import {showPrediction} from "./results.js";
import {tabularMode} from "./tabular.js";

const MODES = {image: imageMode, tabular: tabularMode};
const state = {models: new Map(), info: null, mode: null, target: null, controller: null};

/** `data-state` on the body: loading, ready, busy, done or error; `data-runs` counts the calls that ended (done or error). */
function setState(name) {
  document.body.dataset.state = name;
  if (name === "done" || name === "error") document.body.dataset.runs = String(Number(document.body.dataset.runs || 0) + 1);
}

function methodSchema() {
  const method = state.info.methods.find((m) => m.name === $("#method").value);
  return method ? method.schema : {properties: {}};
}

function resetResults() {
  $("#results").hidden = true;
  $("#image-result").hidden = true;
  $("#tabular-result").hidden = true;
}

async function selectModel(name) {
  state.controller?.abort();
  clearErrors();
  resetResults();
  setState("loading");
  const info = state.models.get(name);
  state.info = info;
  state.target = null;
  state.mode = MODES[info.kind];
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  const facts = [info.kind, info.task, info.device];
  if (info.input) facts.push(`input ${info.input.width}×${info.input.height}`);
  if (info.features) facts.push(`${info.features.length} features`);
  if (info.labels) facts.push(`labels: ${info.labels.join(", ")}`);
  $("#model-info").textContent = facts.join(" · ");
  $("#method").replaceChildren(...info.methods.map((m) => el("option", {value: m.name}, m.name)));
  $("#method").value = info.default_method;
  buildParams($("#params"), methodSchema());
  $("#image-input").hidden = info.kind !== "image";
  $("#tabular-input").hidden = info.kind !== "tabular";
  $("#render").hidden = info.kind !== "image";
  try {
    await state.mode.setup(info);
    setState("ready");
  } catch (error) {
    showProblem(error, () => $("#model"));
    setState("error");
  }
}

async function loadModels() {
  clearErrors();
  setState("loading");
  let listing;
  try {
    listing = await call("v1/models");
  } catch (error) {
    showProblem(error, () => null);
    setState("error");
    return;
  }
  state.models = new Map(listing.models.map((m) => [m.name, m]));
  $("#model").replaceChildren(...listing.models.map((m) => el("option", {value: m.name}, m.name)));
  const wanted = decodeURIComponent(location.hash.slice(1));
  const name = state.models.has(wanted) ? wanted : listing.models[0]?.name;
  if (name === undefined) {
    fieldError($("#model"), "the service serves no model");
    setState("error");
    return;
  }
  $("#model").value = name;
  await selectModel(name);
}

async function explain() {
  if (!state.info) return;
  clearErrors();
  if (!state.mode.ready()) {
    const [input, message] = state.mode.missing();
    fieldError(input, message);
    input.focus();
    return;
  }
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const common = {
    model: state.info.name,
    method: $("#method").value,
    params: readParams($("#params")),
    target: state.target,
    top_k: state.info.labels ? Math.min(5, state.info.labels.length) : null,
  };
  setState("busy");
  $("#explain").disabled = true;
  $("#status").textContent = "Explaining…";
  try {
    const answer = await state.mode.explain(common, controller.signal);
    showPrediction(answer, (index) => {
      state.target = index;
      explain();
    });
    state.mode.show(answer, common);
    $("#results").hidden = false;
    $("#status").textContent = `Done in ${answer.timings_ms.total.toFixed(0)} ms.`;
    setState("done");
  } catch (error) {
    if (error.name === "AbortError") return;
    resetResults(); // no answer to this request: nothing stale stays on show
    $("#status").textContent = error instanceof ApiError ? "The service refused the request." : "Failed.";
    showProblem(error, (loc, status) => state.mode.locate(loc, status));
    setState("error");
  } finally {
    if (state.controller === controller) $("#explain").disabled = false;
  }
}

function init() {
  const key = $("#api-key");
  key.value = apiKey();
  const applyKey = () => {
    if (key.value.trim() === apiKey()) return;
    setApiKey(key.value.trim());
    loadModels();
  };
  key.addEventListener("change", applyKey);
  key.addEventListener("keydown", (event) => {
    if (event.key === "Enter") applyKey();
  });
  $("#api-key-clear").addEventListener("click", () => {
    key.value = "";
    setApiKey("");
    loadModels();
  });
  $("#model").addEventListener("change", (event) => selectModel(event.target.value));
  $("#method").addEventListener("change", () => buildParams($("#params"), methodSchema()));
  $("#explain-form").addEventListener("submit", (event) => {
    event.preventDefault();
    explain();
  });
  for (const mode of Object.values(MODES)) {
    mode.init(() => {
      state.target = null;
      explain();
    });
  }
  loadModels();
}

init();
