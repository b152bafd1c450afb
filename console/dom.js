// A tiny DOM builder (no innerHTML anywhere: text from the API is always text) and formatters.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function num(n) {
  if (n === null || n === undefined) return '—';
  return typeof n === 'number' ? n.toLocaleString('en') : String(n);
}

export function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '—';
  s = Math.round(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function elapsed(job) {
  if (!job.started_at) return '—';
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  return duration((end - new Date(job.started_at)) / 1000);
}

export function badge(state) {
  return h('span', { class: `badge state-${state}` }, state);
}

/** A progress bar as assistive technology reads it, plus phase, rate and ETA. */
export function progress(p) {
  if (!p) return null;
  const total = p.total ?? null;
  const pct = total ? Math.min(100, (100 * p.done) / total) : null;
  const bar = h('div', {
    class: `bar${pct === null ? ' indeterminate' : ''}`,
    role: 'progressbar',
    'aria-label': `Progress${p.phase ? `: ${p.phase}` : ''}`,
    'aria-valuemin': 0,
    'aria-valuenow': p.done,
    'aria-valuemax': total ?? undefined,
    'aria-valuetext': total !== null ? `${p.done} of ${total} ${p.unit}` : `${p.done} ${p.unit}`,
  }, h('div', { class: 'fill' }));
  if (pct !== null) bar.firstChild.style.width = `${pct}%`;
  const facts = [
    total !== null ? `${num(p.done)} / ${num(total)} ${p.unit}` : `${num(p.done)} ${p.unit}`,
    p.rate_per_s ? `${p.rate_per_s.toFixed(p.rate_per_s < 10 ? 1 : 0)} ${p.unit}/s` : null,
    p.eta_s !== null && p.eta_s !== undefined ? `ETA ${duration(p.eta_s)}` : null,
  ].filter(Boolean);
  return h('div', { class: 'progress' }, bar,
    h('div', { class: 'progress-facts' },
      p.phase ? h('span', { class: 'phase' }, p.phase) : null,
      h('span', { class: 'muted' }, facts.join(' · '))));
}

/** Replaces a container's content only when `data` changed (keeps focus and selection). */
export function update(el, data, render) {
  const key = JSON.stringify(data);
  if (el.dataset.key === key) return;
  el.dataset.key = key;
  el.replaceChildren(...[render(data)].flat().filter(Boolean));
}
