// The daemon's API, with the admin token of this browser tab (sessionStorage: gone when the
// tab closes). Every request goes to the page's own origin.

const KEY = 'upkeep.admin_token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
}

export class Unauthorized extends Error {}

function headers(extra = {}, t = token()) {
  const h = { ...extra };
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

/** Sends a request; returns {status, body} (body is the parsed JSON, or null). */
export async function call(method, path, body, { tokenOverride } = {}) {
  const init = { method, headers: headers({ Accept: 'application/json' }, tokenOverride ?? token()) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const resp = await fetch(path, init);
  let json = null;
  const text = await resp.text();
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  return { status: resp.status, body: json };
}

/** GET that expects 200: throws Unauthorized on 401 and an Error with the API message otherwise. */
export async function get(path) {
  const r = await call('GET', path);
  if (r.status === 401) throw new Unauthorized(r.body?.message ?? 'unauthorized');
  if (r.status !== 200) throw new Error(r.body?.message ?? `HTTP ${r.status}`);
  return r.body;
}

/**
 * Follows `/v1/jobs/{id}/events` as a Server-Sent Events stream. EventSource cannot send the
 * Authorization header, so this reads the stream with fetch(). Calls onEvent(event) for each
 * event; resolves when the daemon ends the stream (the job finished) or `signal` aborts.
 */
export async function followEvents(id, after, onEvent, signal) {
  const h = headers({ Accept: 'text/event-stream' });
  if (after) h['Last-Event-ID'] = String(after);
  const resp = await fetch(`/v1/jobs/${encodeURIComponent(id)}/events`, { headers: h, signal });
  if (resp.status === 401) throw new Unauthorized('unauthorized');
  if (!resp.ok || !resp.body) throw new Error(`event stream: HTTP ${resp.status}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = frame.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (!data) continue;
      try { onEvent(JSON.parse(data)); } catch { /* a frame that is not JSON: skip */ }
    }
  }
}

let schemaCache = null;

/** The OpenAPI document (open: no token needed). */
export async function openapi() {
  if (!schemaCache) {
    const resp = await fetch('/openapi.json');
    if (!resp.ok) throw new Error(`openapi.json: HTTP ${resp.status}`);
    schemaCache = await resp.json();
  }
  return schemaCache;
}
