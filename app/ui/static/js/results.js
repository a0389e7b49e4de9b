// What every explanation shows: the prediction and its top classes, the explained target, timings.

import {$, el, formatNumber, percent} from "./dom.js";

function describe(score) {
  return score === null || score === undefined ? "" : ` (${percent(score)})`;
}

/** Shows the prediction; each top class is a button that explains that class instead (`choose(index)`). */
export function showPrediction(answer, choose) {
  const explanation = answer.explanations[0];
  const {prediction, target} = explanation;
  const regression = prediction.value !== null && prediction.value !== undefined;
  $("#prediction").replaceChildren(regression
    ? el("span", {}, "Predicted value: ", el("strong", {}, formatNumber(prediction.value)))
    : el("span", {}, "Predicted: ", el("strong", {}, prediction.label ?? `class ${prediction.index}`),
      describe(prediction.score)));
  const list = $("#top-k");
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.index : null;
  list.replaceChildren(...(prediction.top_k || []).map((entry) => {
    const button = el("button", {type: "button", class: "class-choice", "data-index": entry.index,
      "aria-pressed": entry.index === target.index ? "true" : "false"},
    `${entry.label ?? entry.index} ${percent(entry.score)}`);
    button.addEventListener("click", () => choose(entry.index));
    return el("li", {}, button);
  }));
  $("#top-k-block").hidden = regression || !list.children.length;
  if (focused !== null) list.querySelector(`[data-index="${focused}"]`)?.focus(); // keyboard users stay put
  const what = regression ? "the predicted value" : (target.label ?? `class ${target.index}`);
  const parts = [`Explaining ${what}${regression ? "" : describe(target.score)} with ${answer.method}`];
  if (explanation.convergence_delta !== null && explanation.convergence_delta !== undefined) {
    parts.push(`convergence delta ${formatNumber(explanation.convergence_delta)}`);
  }
  $("#target").textContent = parts.join("; ");
  const timings = answer.timings_ms || {};
  $("#timings").replaceChildren(...Object.entries(timings).flatMap(([phase, ms]) => [
    el("dt", {}, phase), el("dd", {"data-phase": phase}, `${ms.toFixed(1)} ms`)]));
}
