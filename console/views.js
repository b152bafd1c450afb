// The pages: jobs list, a job, a new job form, the overview.

import { call, followEvents, get, openapi, Unauthorized } from './api.js';
import { badge, bytes, elapsed, h, num, progress, update, when } from './dom.js';
import { renderResult, paramsTable } from './results.js';

const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const FINISHED = ['succeeded', 'failed', 'cancelled'];

/** Runs `fn` now and every `ms` until the returned stop function is called. */
function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } finally { if (!stopped) timer = setTimeout(tick, ms); }
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function failHandler(ctx, status) {
  return (err) => {
    if (err instanceof Unauthorized) ctx.unauthorized();
    else if (status) status.textContent = `Could not load: ${err.message}`;
  };
}

async function kinds() {
  const doc = await openapi();
  return (doc.components.schemas.JobRequest.oneOf ?? []).map((v) => v.properties.kind.enum[0]);
}

// ---------------------------------------------------------------------------------------------
// Jobs

export function jobsPage(ctx) {
  document.title = 'Jobs · Upkeep';
  const state = ctx.params.get('state') ?? '';
  const kind = ctx.params.get('kind') ?? '';
  const cursor = ctx.params.get('cursor') ?? '';
  // Page size: 25, or `?limit=` (1..200) from the URL.
  const n = Number(ctx.params.get('limit'));
  const limit = Number.isInteger(n) && n >= 1 && n <= 200 ? String(n) : '';
  const status = h('p', { class: 'muted', role: 'status', 'aria-live': 'polite' });
  const stateSel = h('select', { id: 'filter-state', name: 'state' },
    h('option', { value: '' }, 'Any state'), STATES.map((s) => h('option', { value: s }, s)));
  stateSel.value = state;
  const kindSel = h('select', { id: 'filter-kind', name: 'kind' }, h('option', { value: '' }, 'Any kind'));
  kinds().then((ks) => {
    for (const k of ks) kindSel.append(h('option', { value: k }, k));
    kindSel.value = kind;
  }).catch(() => {});
  const go = (extra = {}) => {
    const q = new URLSearchParams();
    if (stateSel.value) q.set('state', stateSel.value);
    if (kindSel.value) q.set('kind', kindSel.value);
    if (limit) q.set('limit', limit);
    for (const [k, v] of Object.entries(extra)) if (v) q.set(k, v);
    const s = q.toString();
    ctx.navigate(`/${s ? `?${s}` : ''}`, { replace: !extra.cursor });
  };
  stateSel.addEventListener('change', () => go());
  kindSel.addEventListener('change', () => go());
  const body = h('div', { class: 'table-wrap' });
  const pager = h('div', { class: 'pager' });
  ctx.main.replaceChildren(
    h('div', { class: 'title-row' }, h('h1', {}, 'Jobs'), h('a', { class: 'button', href: '/new' }, 'New job')),
    h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs', onsubmit: (e) => e.preventDefault() },
      h('label', { for: 'filter-state' }, 'State'), stateSel,
      h('label', { for: 'filter-kind' }, 'Kind'), kindSel),
    body, pager, status);

  const load = async () => {
    const q = new URLSearchParams({ limit: limit || '25' });
    if (state) q.set('state', state);
    if (kind) q.set('kind', kind);
    if (cursor) q.set('cursor', cursor);
    const page = await get(`/v1/jobs?${q}`);
    update(body, page.items, (items) => jobsTable(items));
    update(pager, [cursor, page.next_cursor], () => [
      cursor ? h('a', { class: 'button secondary', href: `/?${new URLSearchParams({ ...(state && { state }), ...(kind && { kind }), ...(limit && { limit }) })}` }, 'Newest') : null,
      page.next_cursor ? h('button', { type: 'button', class: 'secondary', onclick: () => go({ cursor: page.next_cursor }) }, 'Older jobs') : null,
    ]);
    status.textContent = `Updated ${new Date().toLocaleTimeString('en-GB')} · refreshes every 2 s`;
  };
  return every(2000, () => load().catch(failHandler(ctx, status)));
}

function jobsTable(items) {
  if (!items.length) return h('p', { class: 'empty' }, 'No jobs match.');
  return h('table', { class: 'jobs' },
    h('caption', { class: 'visually-hidden' }, 'Jobs, newest first'),
    h('thead', {}, h('tr', {}, ['Job', 'State', 'Progress', 'Created', 'Duration'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, items.map((j) => h('tr', { 'data-job': j.id },
      h('td', { 'data-label': 'Job' },
        h('a', { href: `/jobs/${j.id}`, class: 'job-link' }, h('strong', {}, j.kind), j.dry_run ? h('span', { class: 'tag' }, 'dry run') : null),
        h('div', { class: 'id muted' }, j.id)),
      h('td', { 'data-label': 'State' }, badge(j.state), j.cancel_requested && j.state === 'running' ? h('span', { class: 'tag' }, 'cancelling') : null),
      h('td', { 'data-label': 'Progress', class: 'progress-cell' },
        j.state === 'running' ? progress(j.progress) : j.error ? h('span', { class: 'error-text' }, j.error.message) : null),
      h('td', { 'data-label': 'Created' }, when(j.created_at)),
      h('td', { 'data-label': 'Duration' }, elapsed(j))))));
}

// ---------------------------------------------------------------------------------------------
// One job

function hasRedacted(v) {
  return JSON.stringify(v ?? null).includes('"***"');
}

/** Params without null values (the API fills in absent ones as null). */
function compact(params) {
  return Object.fromEntries(Object.entries(params ?? {}).filter(([, v]) => v !== null));
}

export function jobPage(ctx, id) {
  document.title = `Job ${id} · Upkeep`;
  const head = h('div', { class: 'job-head' });
  const actions = h('div', { class: 'actions' });
  const actionMsg = h('p', { class: 'error', role: 'alert' });
  const prog = h('section', { 'aria-label': 'Progress' });
  const err = h('div');
  const result = h('section', { 'aria-labelledby': 'result-title' });
  const params = h('section', { 'aria-labelledby': 'params-title' });
  const attempts = h('section', { 'aria-labelledby': 'attempts-title' });
  const timeline = h('ol', { class: 'timeline', 'aria-live': 'off' });
  const status = h('p', { class: 'muted', role: 'status' });
  ctx.main.replaceChildren(
    h('p', {}, h('a', { href: '/' }, '← Jobs')),
    head, actions, actionMsg, prog, err, result, params, attempts,
    h('section', { 'aria-labelledby': 'timeline-title' }, h('h2', { id: 'timeline-title' }, 'Events'), timeline),
    status);

  let job = null;
  const events = [];
  let lastEvent = 0;
  let stopped = false;
  const abort = new AbortController();

  const act = async (what, fn) => {
    actionMsg.textContent = '';
    try { await fn(); } catch (e) {
      if (e instanceof Unauthorized) ctx.unauthorized();
      else actionMsg.textContent = `${what} failed: ${e.message}`;
    }
  };
  const post = async (path, body) => {
    const r = await call('POST', path, body);
    if (r.status === 401) throw new Unauthorized('unauthorized');
    if (r.status !== 202) throw new Error(r.body?.message ?? `HTTP ${r.status}`);
    return r.body;
  };

  const renderActions = (j) => {
    const out = [];
    if (j.state === 'queued' || j.state === 'running') {
      out.push(h('button', { type: 'button', class: 'danger', disabled: j.cancel_requested,
        onclick: () => act('Cancel', async () => { render(await post(`/v1/jobs/${id}/cancel`)); }) },
      j.cancel_requested ? 'Cancelling…' : 'Cancel'));
    }
    if (j.state === 'failed' || j.state === 'cancelled') {
      out.push(h('button', { type: 'button',
        onclick: () => act('Retry', async () => { render(await post(`/v1/jobs/${id}/retry`)); follow(); }) }, 'Retry'));
    }
    if (j.dry_run && FINISHED.includes(j.state)) {
      if (hasRedacted(j.params)) {
        out.push(h('a', { class: 'button', href: `/new?kind=${j.kind}&from=${j.id}` }, 'Run for real…'),
          h('span', { class: 'muted' }, 'Secrets are redacted here: the form asks for them again.'));
      } else {
        out.push(h('button', { type: 'button',
          onclick: () => act('Run for real', async () => {
            const created = await post('/v1/jobs', { kind: j.kind, params: compact(j.params), dry_run: false });
            ctx.navigate(`/jobs/${created.id}`);
          }) }, 'Run for real'));
      }
    }
    if ((j.kind === 'orphan_files' || j.kind === 'orphan_records') && !j.dry_run && j.state === 'succeeded'
      && j.params?.confirm !== true && (j.result?.orphans ?? 0) > 0) {
      out.push(h('button', { type: 'button', class: 'danger',
        onclick: () => act('Confirm', async () => {
          // Exactly this plan: its id, on the same storage; the daemon re-checks each item.
          const p = Object.fromEntries(Object.entries(compact(j.params)).filter(([, v]) => !hasRedacted(v)));
          const created = await post('/v1/jobs', { kind: j.kind, params: { ...p, confirm: true, plan_job_id: j.id } });
          ctx.navigate(`/jobs/${created.id}`);
        }) }, 'Confirm this plan'));
    }
    out.push(h('a', { class: 'button secondary', href: `/new?kind=${j.kind}&from=${j.id}` }, 'Edit as new job'));
    return out;
  };

  const render = (j) => {
    job = j;
    document.title = `${j.kind} ${j.state} · Upkeep`;
    update(head, [j.kind, j.state, j.dry_run, j.cancel_requested, j.id], () => [
      h('h1', {}, j.kind, ' ', badge(j.state), j.dry_run ? h('span', { class: 'tag' }, 'dry run') : null),
      h('p', { class: 'id' }, 'Job ', h('code', {}, j.id)),
    ]);
    update(actions, [j.state, j.dry_run, j.cancel_requested, j.params, j.result?.orphans], () => renderActions(j));
    update(prog, [j.state, j.progress, j.started_at, j.finished_at, j.attempts], () => [
      h('dl', { class: 'facts' },
        fact('State', j.state), fact('Attempts', j.attempts), fact('Created', when(j.created_at)),
        fact('Started', when(j.started_at)), fact('Finished', when(j.finished_at)), fact('Duration', elapsed(j)),
        j.parent_id ? fact('Parent', h('a', { href: `/jobs/${j.parent_id}` }, j.parent_id)) : null),
      j.progress && (j.state === 'running' || j.state === 'queued') ? progress(j.progress) : null,
      j.progress && FINISHED.includes(j.state) ? h('p', { class: 'muted' }, `Last phase: ${j.progress.phase}`) : null,
    ]);
    update(err, j.error, (e) => e ? h('div', { class: 'callout error-box', role: 'alert' },
      h('strong', {}, `Error (${e.code}): `), e.message) : null);
    update(result, [j.kind, j.dry_run, j.result], () => [
      h('h2', { id: 'result-title' }, j.dry_run ? 'Plan (dry run)' : 'Result'),
      j.result ? renderResult(j) : h('p', { class: 'muted' }, FINISHED.includes(j.state) ? 'No result.' : 'Not finished yet.'),
    ]);
    update(params, j.params, (p) => [h('h2', { id: 'params-title' }, 'Params'), paramsTable(p)]);
  };

  const renderEvents = () => {
    timeline.replaceChildren(...events.slice().reverse().map((e) => h('li', { class: `ev ev-${e.type}` },
      h('time', { datetime: e.at }, when(e.at)), ' ',
      h('span', { class: 'tag' }, e.type), e.attempt ? h('span', { class: 'muted' }, ` attempt ${e.attempt}`) : null, ' ',
      h('span', { class: 'ev-msg' }, summary(e)))));
    update(attempts, events.filter((e) => e.type === 'state').map((e) => e.id), () => [
      h('h2', { id: 'attempts-title' }, 'Attempts'), attemptsTable(events)]);
  };

  let refreshing = null;
  const refresh = async () => {
    if (refreshing) return refreshing;
    refreshing = get(`/v1/jobs/${encodeURIComponent(id)}`).then(render).finally(() => { refreshing = null; });
    return refreshing;
  };

  const onEvent = (e) => {
    if (e.id <= lastEvent) return;
    lastEvent = e.id;
    events.push(e);
    renderEvents();
    refresh().catch(() => {});
  };

  let following = false;
  const follow = async () => {
    if (following || stopped) return;
    following = true;
    try {
      status.textContent = 'Live: following the job\'s events';
      await followEvents(id, lastEvent, onEvent, abort.signal);
      if (!stopped) status.textContent = 'The job has finished.';
      await refresh();
    } catch (e) {
      if (e instanceof Unauthorized) ctx.unauthorized();
      else if (!stopped) status.textContent = 'Live stream interrupted; polling every 2 s.';
    } finally {
      following = false;
    }
  };

  (async () => {
    try {
      await refresh();
      let page;
      do {
        page = await get(`/v1/jobs/${encodeURIComponent(id)}/events?after=${lastEvent}&limit=1000`);
        for (const e of page.items) { lastEvent = Math.max(lastEvent, e.id); events.push(e); }
      } while (page.items.length === 1000);
      renderEvents();
      if (!FINISHED.includes(job.state)) follow();
      else status.textContent = 'The job has finished.';
    } catch (e) {
      if (e instanceof Unauthorized) ctx.unauthorized();
      else ctx.main.replaceChildren(h('h1', {}, 'Job not found'), h('p', { class: 'error', role: 'alert' }, e.message),
        h('p', {}, h('a', { href: '/' }, 'Back to the jobs')));
      stopped = true;
    }
  })();
  // Polling as a fallback for a stream that broke (proxies, sleep), and for a retried job.
  const stopPoll = every(2000, async () => {
    if (stopped || !job) return;
    try {
      await refresh();
      if (!FINISHED.includes(job.state) && !following) {
        const page = await get(`/v1/jobs/${encodeURIComponent(id)}/events?after=${lastEvent}&limit=1000`);
        page.items.forEach(onEvent);
        follow();
      }
    } catch (e) { if (e instanceof Unauthorized) ctx.unauthorized(); }
  });
  return () => { stopped = true; abort.abort(); stopPoll(); };
}

function fact(k, v) {
  return [h('dt', {}, k), h('dd', {}, v ?? '—')];
}

function summary(e) {
  const d = e.data ?? {};
  if (e.type === 'progress') {
    return `${d.phase ?? ''} ${d.done ?? ''}${d.total != null ? `/${d.total}` : ''} ${d.unit ?? ''}`.trim();
  }
  if (e.type === 'state') {
    const parts = [d.state];
    if (d.message) parts.push(d.message);
    if (d.error?.message) parts.push(`${d.error.code ?? 'error'}: ${d.error.message}`);
    if (d.worker) parts.push(`on ${d.worker}`);
    return parts.filter(Boolean).join(' — ');
  }
  return d.message ?? JSON.stringify(d);
}

function attemptsTable(events) {
  const rows = new Map();
  for (const e of events) {
    if (e.type !== 'state' || !e.attempt) continue;
    const r = rows.get(e.attempt) ?? { attempt: e.attempt, started: null, ended: null, state: null, error: null };
    if (e.data?.state === 'running' && !r.started) r.started = e.at;
    else if (e.data?.state && e.data.state !== 'running') { r.ended = e.at; r.state = e.data.state; }
    if (e.data?.error) r.error = `${e.data.error.code ?? 'error'}: ${e.data.error.message ?? ''}`;
    else if (e.data?.state !== 'running' && e.data?.message && e.data.state !== 'succeeded') r.error = r.error ?? e.data.message;
    rows.set(e.attempt, r);
  }
  if (!rows.size) return h('p', { class: 'muted' }, 'Not started yet.');
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ['Attempt', 'Started', 'Ended', 'Outcome', 'Error or note'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, [...rows.values()].map((r) => h('tr', {},
      h('td', { 'data-label': 'Attempt' }, r.attempt), h('td', { 'data-label': 'Started' }, when(r.started)),
      h('td', { 'data-label': 'Ended' }, when(r.ended)), h('td', { 'data-label': 'Outcome' }, r.state ? badge(r.state) : 'running'),
      h('td', { 'data-label': 'Error or note', class: 'wrap' }, r.error ?? '—'))))));
}

// ---------------------------------------------------------------------------------------------
// New job: a form generated from the kind's params schema in the OpenAPI document

function resolve(doc, s) {
  let seen = 0;
  while (s && s.$ref && seen++ < 10) {
    const name = s.$ref.replace('#/components/schemas/', '');
    s = { ...doc.components.schemas[name], ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== '$ref')) };
  }
  return s ?? {};
}

function baseType(s) {
  const t = Array.isArray(s.type) ? s.type.filter((x) => x !== 'null') : [s.type];
  if (s.oneOf || s.anyOf || s.allOf) return 'json';
  if (s.enum) return 'enum';
  if (t.length !== 1) return 'json';
  return t[0] === 'array' || t[0] === 'object' || t[0] === undefined ? 'json' : t[0];
}

function paramsSchema(doc, kind) {
  const v = (doc.components.schemas.JobRequest.oneOf ?? []).find((x) => x.properties.kind.enum[0] === kind);
  return v ? resolve(doc, v.properties.params) : null;
}

export function newJobPage(ctx) {
  document.title = 'New job · Upkeep';
  const kindSel = h('select', { id: 'kind', name: 'kind', required: true });
  const fields = h('div', { class: 'fields' });
  const formError = h('p', { class: 'error', role: 'alert', id: 'form-error' });
  const dry = h('button', { type: 'submit', name: 'dry_run', value: 'true' }, 'Dry run');
  const real = h('button', { type: 'submit', name: 'dry_run', value: 'false', class: 'secondary' }, 'Run for real');
  const form = h('form', { class: 'card new-job', novalidate: true },
    h('label', { for: 'kind' }, 'Kind'), kindSel,
    h('p', { class: 'muted' }, 'Start with a dry run: it reports what a real run would do and touches nothing. Its page has a Run for real button with the same params.'),
    fields, formError, h('div', { class: 'actions' }, dry, real));
  ctx.main.replaceChildren(h('h1', {}, 'New job'), form);
  let doc = null;
  let inputs = [];

  const build = (kind, values) => {
    const schema = paramsSchema(doc, kind);
    inputs = [];
    formError.textContent = '';
    if (!schema) { fields.replaceChildren(); return; }
    const props = Object.entries(schema.properties ?? {});
    if (!props.length) { fields.replaceChildren(h('p', { class: 'muted' }, 'This kind has no params.')); return; }
    fields.replaceChildren(h('fieldset', {}, h('legend', {}, `Params of ${kind}`), props.map(([name, raw]) => {
      const s = resolve(doc, raw);
      const t = baseType(s);
      const idf = `p-${name}`;
      const err = h('p', { class: 'field-error', id: `${idf}-error`, 'aria-live': 'polite' });
      const hint = s.description ? h('p', { class: 'hint', id: `${idf}-hint` }, s.description) : null;
      const described = [hint ? `${idf}-hint` : null, `${idf}-error`].filter(Boolean).join(' ');
      const v = values && name in values ? values[name] : undefined;
      let input;
      if (t === 'boolean') {
        input = h('input', { type: 'checkbox', id: idf, name, 'aria-describedby': described, checked: v ?? s.default ?? false });
        inputs.push({ name, t, input, err });
        return h('div', { class: 'field check', 'data-field': name }, input, h('label', { for: idf }, name), hint, err);
      }
      if (t === 'enum') {
        input = h('select', { id: idf, name, 'aria-describedby': described },
          s.default === undefined ? h('option', { value: '' }, '(default)') : null,
          s.enum.filter((x) => x !== null).map((x) => h('option', { value: x }, x)));
        input.value = v ?? s.default ?? '';
      } else if (t === 'json') {
        input = h('textarea', { id: idf, name, rows: 3, spellcheck: 'false', 'aria-describedby': described,
          placeholder: s.default !== undefined ? JSON.stringify(s.default) : 'JSON; empty for the default' });
        input.value = v !== undefined && v !== null ? JSON.stringify(v, null, 1) : '';
      } else {
        input = h('input', { id: idf, name, type: t === 'integer' || t === 'number' ? 'number' : 'text',
          step: t === 'number' ? 'any' : undefined, min: s.minimum, max: s.maximum, 'aria-describedby': described,
          placeholder: s.default !== undefined ? `default ${s.default}` : (s.format ?? '') });
        input.value = v ?? s.default ?? '';
      }
      inputs.push({ name, t, input, err });
      return h('div', { class: 'field', 'data-field': name },
        h('label', { for: idf }, name, t === 'json' ? h('span', { class: 'muted' }, ' (JSON)') : null,
          s.default !== undefined ? h('span', { class: 'muted' }, ` — default ${JSON.stringify(s.default)}`) : null),
        input, hint, err);
    })));
  };

  const collect = () => {
    const params = {};
    let ok = true;
    for (const { name, t, input, err } of inputs) {
      err.textContent = '';
      input.removeAttribute('aria-invalid');
      if (t === 'boolean') { params[name] = input.checked; continue; }
      const raw = input.value.trim();
      if (raw === '') continue;
      if (t === 'json') {
        try { params[name] = JSON.parse(raw); } catch (e) {
          err.textContent = `Not valid JSON: ${e.message}`; input.setAttribute('aria-invalid', 'true'); ok = false;
        }
      } else if (t === 'integer' || t === 'number') {
        const n = Number(raw);
        if (!Number.isFinite(n)) { err.textContent = 'Must be a number'; input.setAttribute('aria-invalid', 'true'); ok = false; }
        params[name] = n;
      } else params[name] = raw;
    }
    return ok ? params : null;
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    formError.textContent = '';
    const params = collect();
    if (!params) { formError.textContent = 'Fix the fields marked above.'; return; }
    const dryRun = (e.submitter ?? dry).value === 'true';
    dry.disabled = real.disabled = true;
    try {
      const r = await call('POST', '/v1/jobs', { kind: kindSel.value, params, dry_run: dryRun });
      if (r.status === 401) { ctx.unauthorized(); return; }
      if (r.status === 202) { ctx.navigate(`/jobs/${r.body.id}`); return; }
      const field = r.body?.field ?? '';
      const name = field.replace(/^params\./, '').split(/[.[]/)[0];
      const target = field.startsWith('params.') ? inputs.find((i) => i.name === name) : null;
      if (target) {
        target.err.textContent = `${r.body.message}${field !== `params.${name}` ? ` (${field})` : ''}`;
        target.input.setAttribute('aria-invalid', 'true');
        target.input.focus();
        formError.textContent = `The daemon refused the request: ${field}: ${r.body.message}`;
      } else {
        formError.textContent = `The daemon refused the request (${r.status}): ${field ? `${field}: ` : ''}${r.body?.message ?? ''}`;
      }
    } catch (err) {
      formError.textContent = `Could not submit: ${err.message}`;
    } finally {
      dry.disabled = real.disabled = false;
    }
  });

  (async () => {
    try {
      doc = await openapi();
      const ks = await kinds();
      kindSel.replaceChildren(...ks.map((k) => h('option', { value: k }, k)));
      kindSel.value = ks.includes(ctx.params.get('kind')) ? ctx.params.get('kind') : ks[0];
      let values;
      const from = ctx.params.get('from');
      if (from) {
        const j = await get(`/v1/jobs/${encodeURIComponent(from)}`);
        values = Object.fromEntries(Object.entries(j.params ?? {}).filter(([, v]) => !hasRedacted(v)));
      }
      build(kindSel.value, values);
      kindSel.addEventListener('change', () => {
        history.replaceState(null, '', `/new?kind=${kindSel.value}`);
        build(kindSel.value);
      });
    } catch (e) {
      failHandler(ctx, formError)(e);
    }
  })();
  return () => {};
}

// ---------------------------------------------------------------------------------------------
// Overview

export function overviewPage(ctx) {
  document.title = 'Overview · Upkeep';
  const pre = h('div', {}, h('p', { class: 'muted' }, 'Asking the daemon what it sees…'));
  const tenants = h('div');
  const schedules = h('div');
  ctx.main.replaceChildren(h('h1', {}, 'Overview'), pre,
    h('section', { 'aria-labelledby': 'tenants-title' }, h('h2', { id: 'tenants-title' }, 'Tenants'), tenants),
    h('section', { 'aria-labelledby': 'schedules-title' }, h('h2', { id: 'schedules-title' }, 'Schedules'), schedules));
  const fail = failHandler(ctx);

  get('/v1/preflight').then((p) => {
    const reach = (r) => [
      h('span', { class: `badge ${r.reachable === true ? 'state-succeeded' : r.reachable === false ? 'state-failed' : 'state-queued'}` },
        r.reachable === true ? 'reachable' : r.reachable === false ? 'unreachable' : 'not checked'),
      ` ${r.type}`, r.location ? h('div', { class: 'id' }, r.location) : null,
      r.version ? h('div', { class: 'muted' }, `version ${r.version}`) : null,
      r.detail ? h('div', { class: 'muted wrap' }, r.detail) : null];
    const b = p.backup;
    pre.replaceChildren(
      h('div', { class: 'cards' },
        h('section', { class: 'card', 'aria-labelledby': 'db-title' }, h('h2', { id: 'db-title' }, 'Database'),
          h('dl', { class: 'facts' },
            fact('Reachable', p.database.reachable ? 'yes' : 'no'), fact('URL', h('span', { class: 'id' }, p.database.url)),
            fact('Postgres', p.database.server_version), fact('Upkeep', p.upkeep_version))),
        h('section', { class: 'card', 'aria-labelledby': 'dify-title' }, h('h2', { id: 'dify-title' }, 'Dify'),
          h('dl', { class: 'facts' },
            fact('Revision', h('code', {}, p.dify.revision ?? 'none')), fact('Release', p.dify.release ?? 'unknown'),
            fact('Known to Upkeep', p.dify.known ? 'yes' : 'no'))),
        h('section', { class: 'card', 'aria-labelledby': 'storage-title' }, h('h2', { id: 'storage-title' }, 'Storage'), reach(p.storage)),
        h('section', { class: 'card', 'aria-labelledby': 'vector-title' }, h('h2', { id: 'vector-title' }, 'Vector store'), reach(p.vector_store)),
        h('section', { class: 'card', 'aria-labelledby': 'backup-title' }, h('h2', { id: 'backup-title' }, 'Backups'),
          h('p', {}, b.stale ? h('span', { class: 'badge state-failed' }, 'no verified backup of this schema')
            : h('span', { class: 'badge state-succeeded' }, 'verified backup of this schema')),
          b.newest_verified ? h('p', {}, 'Newest verified: ', h('code', {}, b.newest_verified.set), ` (${bytes(b.newest_verified.bytes)}, ${when(b.newest_verified.verified_at)})`) : null,
          b.sets.length ? h('div', { class: 'table-wrap' }, h('table', {},
            h('thead', {}, h('tr', {}, ['Set', 'Label', 'Revision', 'Completed', 'Verified', 'Size'].map((c) => h('th', { scope: 'col' }, c)))),
            h('tbody', {}, b.sets.map((s) => h('tr', {},
              h('td', { 'data-label': 'Set', class: 'id' }, s.set), h('td', { 'data-label': 'Label' }, s.label ?? '—'),
              h('td', { 'data-label': 'Revision' }, s.dify_revision ?? '—'), h('td', { 'data-label': 'Completed' }, when(s.completed_at)),
              h('td', { 'data-label': 'Verified' }, when(s.verified_at)), h('td', { 'data-label': 'Size', class: 'num' }, bytes(s.bytes))))))) : h('p', { class: 'muted' }, 'No backup sets yet.'))),
      h('section', { 'aria-labelledby': 'tables-title' }, h('h2', { id: 'tables-title' }, 'Tables the jobs touch'),
        h('div', { class: 'table-wrap' }, h('table', {},
          h('thead', {}, h('tr', {}, ['Table', 'Rows (estimate)', 'Size'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, p.tables.map((t) => h('tr', {},
            h('td', { 'data-label': 'Table' }, t.table, t.exists ? null : h('span', { class: 'tag' }, 'missing')),
            h('td', { 'data-label': 'Rows (estimate)', class: 'num' }, num(t.rows_estimate)),
            h('td', { 'data-label': 'Size', class: 'num' }, bytes(t.total_bytes)))))))));
  }).catch((e) => { fail(e); pre.replaceChildren(h('p', { class: 'error', role: 'alert' }, `Preflight failed: ${e.message}`)); });

  // Tenants: every page (the API pages by id), searched here by name or id.
  const search = h('input', { id: 'tenant-search', type: 'search', name: 'q', autocomplete: 'off' });
  const list = h('div', { class: 'table-wrap' });
  const more = h('div');
  const all = [];
  let next = null;
  const show = () => {
    const q = search.value.trim().toLowerCase();
    const hits = all.filter((t) => !q || t.name.toLowerCase().includes(q) || t.id.includes(q));
    list.replaceChildren(hits.length ? h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Tenant ID', 'Status', 'Apps', 'Members', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, hits.map((t) => h('tr', {},
        h('td', { 'data-label': 'Name', class: 'wrap' }, t.name), h('td', { 'data-label': 'Tenant ID' }, h('code', { class: 'id' }, t.id)),
        h('td', { 'data-label': 'Status' }, t.status), h('td', { 'data-label': 'Apps', class: 'num' }, num(t.apps)),
        h('td', { 'data-label': 'Members', class: 'num' }, num(t.members)), h('td', { 'data-label': 'Created' }, when(t.created_at))))))
      : h('p', { class: 'empty' }, all.length ? 'No tenant matches.' : 'No tenants.'));
    more.replaceChildren(...(next ? [h('button', { type: 'button', class: 'secondary', onclick: loadTenants }, 'Load more tenants')] : []));
  };
  async function loadTenants() {
    try {
      const page = await get(`/v1/tenants?limit=500${next ? `&cursor=${next}` : ''}`);
      all.push(...page.items);
      next = page.next_cursor;
      show();
    } catch (e) { fail(e); list.replaceChildren(h('p', { class: 'error' }, `Tenants: ${e.message}`)); }
  }
  search.addEventListener('input', show);
  tenants.replaceChildren(h('div', { class: 'filters' }, h('label', { for: 'tenant-search' }, 'Search tenants by name or ID'), search), list, more);
  loadTenants();

  get('/v1/schedules').then((page) => {
    const items = page.items ?? [];
    schedules.replaceChildren(items.length ? h('div', { class: 'table-wrap' }, h('table', {},
      h('thead', {}, h('tr', {}, ['Kind', 'Cron', 'Time zone', 'Next run', 'Enabled', 'Params'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, items.map((s) => h('tr', {},
        h('td', { 'data-label': 'Kind' }, s.kind, s.dry_run ? h('span', { class: 'tag' }, 'dry run') : null),
        h('td', { 'data-label': 'Cron' }, h('code', {}, s.cron)), h('td', { 'data-label': 'Time zone' }, s.timezone),
        h('td', { 'data-label': 'Next run' }, when(s.next_run_at)), h('td', { 'data-label': 'Enabled' }, s.enabled ? 'yes' : 'no'),
        h('td', { 'data-label': 'Params', class: 'wrap' }, h('code', {}, JSON.stringify(s.params)))))))) : h('p', { class: 'empty' }, 'No schedules. Create one with POST /v1/schedules.'));
  }).catch((e) => { fail(e); schedules.replaceChildren(h('p', { class: 'error' }, `Schedules: ${e.message}`)); });
  return () => {};
}
