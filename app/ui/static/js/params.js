// Inputs for a method's parameters, built from the JSON schema in ModelInfo (types, bounds,
// enums, this model's defaults), and read back into the request's `params`.

import {el, field} from "./dom.js";

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

/** What a property accepts: its enum values, and whether a number, any string or null is allowed. */
function accepts(prop) {
  const options = prop.anyOf || [prop];
  const out = {values: [], number: false, integer: false, text: false, nullable: false, boolean: false};
  for (const option of options) {
    if (option.enum) out.values.push(...option.enum);
    else if (option.type === "integer") out.integer = out.number = true;
    else if (option.type === "number") out.number = true;
    else if (option.type === "string") out.text = true;
    else if (option.type === "null") out.nullable = true;
    else if (option.type === "boolean") out.boolean = true;
    if (option.minimum !== undefined) out.minimum = option.minimum;
    if (option.maximum !== undefined) out.maximum = option.maximum;
  }
  return out;
}

function bounds(kind) {
  if (kind.minimum !== undefined && kind.maximum !== undefined) return `${kind.minimum} to ${kind.maximum}`;
  if (kind.minimum !== undefined) return `at least ${kind.minimum}`;
  if (kind.maximum !== undefined) return `at most ${kind.maximum}`;
  return "";
}

function control(name, prop, kind) {
  const value = prop.default;
  if (kind.boolean && !kind.values.length) {
    return [el("input", {type: "checkbox", checked: value === true}), ""];
  }
  if (kind.values.length && !kind.number && !kind.text) {
    const select = el("select", {}, ...kind.values.map((v) => el("option", {value: v}, v)));
    select.value = value;
    return [select, ""];
  }
  if (kind.number && !kind.values.length) {
    const input = el("input", {type: "number", step: kind.integer ? 1 : "any", min: kind.minimum,
      max: kind.maximum, inputmode: kind.integer ? "numeric" : "decimal"});
    input.value = value ?? "";
    return [input, bounds(kind)];
  }
  // A choice or a free value (e.g. baseline: "zeros" | "mean" | a number; layer: a name or the default).
  const list = kind.values.length ? `param-${name}-choices` : null;
  const input = el("input", {type: "text", list, spellcheck: "false", placeholder: value === null ? "default" : null});
  input.value = value ?? "";
  const range = bounds(kind);
  const number = kind.number ? `, or a number${range ? ` (${range})` : ""}` : "";
  const words = kind.values.length ? kind.values.join(", ") + number : "";
  return [input, words, list && el("datalist", {id: list}, ...kind.values.map((v) => el("option", {value: v})))];
}

/** Replaces the legend's siblings in `fieldset` by one field per parameter of `schema`. */
export function buildParams(fieldset, schema) {
  const legend = fieldset.querySelector("legend");
  fieldset.replaceChildren(legend);
  for (const [name, prop] of Object.entries(schema.properties || {})) {
    const kind = accepts(prop);
    const [input, hint, extra] = control(name, prop, kind);
    input.name = name;
    input.dataset.kind = JSON.stringify(kind);
    const node = field(`param-${name}`, name, input, hint);
    if (extra) node.append(extra);
    fieldset.append(node);
  }
}

/** The request's `params`: every field that has a value (empty ones fall back to the defaults). */
export function readParams(fieldset) {
  const params = {};
  for (const input of fieldset.querySelectorAll("input, select")) {
    if (!input.name) continue;
    const kind = JSON.parse(input.dataset.kind);
    if (input.type === "checkbox") {
      params[input.name] = input.checked;
      continue;
    }
    const raw = input.value.trim();
    if (raw === "") continue;
    if (kind.number && NUMBER.test(raw) && !kind.values.includes(raw)) params[input.name] = Number(raw);
    else params[input.name] = raw;
  }
  return params;
}
