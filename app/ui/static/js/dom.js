// Tiny DOM helpers.

export const $ = (selector) => document.querySelector(selector);

/** `el("p", {class: "hint"}, "text", child)`: an element with attributes and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

/** A labelled form field: label, control, and the element its errors go into (`<id>-error`). */
export function field(id, labelText, control, hint) {
  control.id = id;
  const error = el("p", {id: `${id}-error`, class: "field-error", hidden: true});
  const described = [hint ? `${id}-hint` : null, error.id].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", described);
  const parts = [el("label", {for: id}, labelText), control];
  if (hint) parts.push(el("p", {id: `${id}-hint`, class: "hint"}, hint));
  parts.push(error);
  return el("div", {class: "field"}, ...parts);
}

export const percent = (score) => `${(100 * score).toFixed(1)}%`;

/** `value` to `digits` significant digits, in exponent form only when very small or large. */
export function formatNumber(value, digits = 4) {
  if (!Number.isFinite(value)) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-4 || magnitude >= 1e7)) return value.toExponential(digits - 1);
  return String(Number(value.toPrecision(digits)));
}
