// The service's own HTTP API, called with the API key kept in this tab (sessionStorage).

const KEY = "explainserve.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

/** An answer that is not 2xx: `problem` is its problem+json body (RFC 9457). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      // fall through: not the JSON it claims to be
    }
  }
  const text = await response.text().catch(() => "");
  return {title: response.statusText || "Error", status: response.status, detail: text.slice(0, 500)};
}

/**
 * Calls `path` (relative to the page, so the page works behind a path prefix too).
 * `json`: a body sent as JSON; `form`: a FormData sent as multipart. Answers the parsed JSON,
 * or a Blob for other content; throws ApiError otherwise.
 */
export async function call(path, {json, form, signal} = {}) {
  const headers = {Accept: "application/json"};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = {method: "GET", headers, signal};
  if (json !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.method = "POST";
    init.body = form;
  }
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, {title: "Network error", detail: `the service could not be reached (${error.message})`});
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.blob();
}

export const modelPath = (model, verb) => `v1/models/${encodeURIComponent(model)}/${verb}`;
export const examplesPath = (model, name) =>
  `ui/examples/${encodeURIComponent(model)}` + (name ? `/${encodeURIComponent(name)}` : "");
