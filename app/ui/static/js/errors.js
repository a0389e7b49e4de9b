// Service errors (problem+json) shown beside the field they concern, and in one alert.

import {$, el} from "./dom.js";

export function clearErrors() {
  for (const box of document.querySelectorAll(".field-error")) {
    box.hidden = true;
    box.textContent = "";
  }
  for (const input of document.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  $("#problem").hidden = true;
  $("#problem").replaceChildren();
}

export function fieldError(input, message) {
  const box = document.getElementById(`${input.id}-error`);
  if (box) {
    box.textContent = message;
    box.hidden = false;
  }
  input.setAttribute("aria-invalid", "true");
}

/** The control a problem's `loc` names, wherever the request put it. */
function commonField(loc) {
  const [head, key] = loc;
  if (head === "params" && key !== undefined) return document.getElementById(`param-${key}`);
  if (head === "method") return $("#method");
  if (head === "render" && (key === "colormap" || key === "sign")) return document.getElementById(key);
  return null;
}

/**
 * Shows an ApiError: 401/403 beside the key field; each `errors[].loc` beside its field
 * (`locate(loc, status)` maps the model-specific ones, such as instances); the title and the
 * detail in the alert under the form. Focus goes to the first field concerned.
 */
export function showProblem(error, locate) {
  const problem = error.problem || {title: "Error", detail: String(error.message || error)};
  const status = error.status || problem.status;
  const fields = [];
  if (status === 401 || status === 403) {
    fieldError($("#api-key"), problem.detail);
    fields.push($("#api-key"));
  }
  const items = Array.isArray(problem.errors) ? problem.errors : [];
  for (const item of items) {
    const loc = Array.isArray(item.loc) ? item.loc : [];
    const input = commonField(loc) || locate(loc, status);
    if (input) {
      fieldError(input, items.length === 1 ? problem.detail : item.msg);
      fields.push(input);
    }
  }
  if (!items.length && status !== 401 && status !== 403) {
    const input = locate([], status);
    if (input) {
      fieldError(input, problem.detail);
      fields.push(input);
    }
  }
  const box = $("#problem");
  const heading = status ? `${status} ${problem.title || ""}`.trim() : problem.title || "Error";
  box.replaceChildren(el("strong", {}, heading), el("span", {class: "detail"}, problem.detail || ""));
  box.hidden = false;
  if (fields.length) fields[0].focus();
}
