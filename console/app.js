// The console's entry point: sign-in, client-side routing (history API, so every page has a
// URL that can be reloaded and shared) and the page views.

import { call, setToken, token, Unauthorized } from './api.js';
import { h } from './dom.js';
import { jobsPage, jobPage, newJobPage, overviewPage } from './views.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const session = document.getElementById('session');

// Each page returns a cleanup function (stops its polling and streams).
let cleanup = null;
// 'token': signed in with a token; 'open': the daemon has no token (loopback only).
let mode = null;

export function navigate(url, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  route();
}

/** Links inside the app route on the client; modified clicks keep their browser meaning. */
document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || a.target || a.hasAttribute('download')) return;
  if (!/^\/($|jobs|new|overview)/.test(url.pathname)) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', () => route());

/** Asks an authenticated endpoint whether `t` (or no token at all) is accepted. */
async function accepted(t) {
  const r = await call('GET', '/v1/jobs?limit=1', undefined, { tokenOverride: t ?? '' });
  return r.status === 200 ? true : r.status === 401 ? false : Promise.reject(new Error(r.body?.message ?? `HTTP ${r.status}`));
}

function showSession() {
  nav.hidden = false;
  if (mode === 'open') {
    session.replaceChildren(h('span', { class: 'muted' }, 'No admin token configured (loopback only)'));
  } else {
    session.replaceChildren(h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
  }
}

function signOut() {
  setToken(null);
  mode = null;
  signIn();
}

function signIn(message) {
  if (cleanup) { cleanup(); cleanup = null; }
  nav.hidden = true;
  session.replaceChildren();
  document.title = 'Sign in · Upkeep';
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { id: 'signin-error', class: 'error', role: 'alert' }, message ?? '');
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'card signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to Upkeep'),
    h('p', { class: 'muted' }, 'Use the daemon\'s UPKEEP_ADMIN_TOKEN. It is kept for this browser tab only.'),
    h('label', { for: 'token' }, 'Admin token'),
    input,
    error,
    button);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    button.disabled = true;
    try {
      const t = input.value.trim();
      if (await accepted(t)) {
        setToken(t);
        mode = 'token';
        showSession();
        route();
      } else {
        error.textContent = 'The daemon refused this token (401). Check the value of UPKEEP_ADMIN_TOKEN and try again.';
        input.setAttribute('aria-invalid', 'true');
        input.select();
      }
    } catch (err) {
      error.textContent = `Could not reach the daemon: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(form);
  input.focus();
}

function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  if (!mode) { start(); return; }
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  const ctx = {
    main,
    params,
    navigate,
    unauthorized: () => { setToken(null); mode = null; signIn('Your token is no longer accepted: sign in again.'); },
  };
  let m;
  try {
    if (path === '/' || path === '/jobs') cleanup = jobsPage(ctx);
    else if ((m = path.match(/^\/jobs\/([^/]+)$/))) cleanup = jobPage(ctx, decodeURIComponent(m[1]));
    else if (path === '/new') cleanup = newJobPage(ctx);
    else if (path === '/overview') cleanup = overviewPage(ctx);
    else main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '/' }, 'Back to the jobs')));
  } catch (err) {
    if (err instanceof Unauthorized) ctx.unauthorized();
    else throw err;
  }
  for (const a of nav.querySelectorAll('a')) {
    const here = a.getAttribute('href') === '/' ? path === '/' || path.startsWith('/jobs') : path.startsWith(a.getAttribute('href'));
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

async function start() {
  try {
    if (token() && await accepted(token())) mode = 'token';
    else if (await accepted(null)) mode = 'open';
  } catch (err) {
    main.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Could not reach the daemon: ${err.message}`));
    return;
  }
  if (!mode) { signIn(token() ? 'Your saved token is no longer accepted: sign in again.' : undefined); return; }
  showSession();
  route();
}

route();
