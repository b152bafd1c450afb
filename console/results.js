// A job's result, rendered for its kind; anything else falls back to a generic view (scalars
// as facts, lists of objects as tables, nested objects as sub-sections) plus the raw JSON.

import { bytes, h, num } from './dom.js';

const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function label(k) {
  return k.replace(/_/g, ' ');
}

function cell(k, v) {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'number' && /bytes$/.test(k)) return bytes(v);
  if (typeof v === 'number') return num(v);
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object') return h('code', { class: 'wrap' }, JSON.stringify(v));
  return String(v);
}

/** A table of objects; `columns` picks and orders keys (default: every key seen). */
export function table(rows, columns, caption) {
  if (!rows?.length) return h('p', { class: 'muted' }, 'None.');
  const cols = columns ?? [...new Set(rows.flatMap((r) => (isObj(r) ? Object.keys(r) : ['value'])))];
  return h('div', { class: 'table-wrap' }, h('table', {},
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', { scope: 'col' }, label(typeof c === 'string' ? c : c.label))))),
    h('tbody', {}, rows.map((r) => h('tr', {}, cols.map((c) => {
      const key = typeof c === 'string' ? c : c.key;
      const v = typeof c === 'string' ? (isObj(r) ? r[c] : r) : c.get(r);
      return h('td', { 'data-label': label(typeof c === 'string' ? c : c.label), class: typeof v === 'number' ? 'num' : 'wrap' }, cell(key, v));
    }))))));
}

function facts(obj, skip = []) {
  const entries = Object.entries(obj).filter(([k, v]) => !skip.includes(k) && (!isObj(v) && !(Array.isArray(v) && v.some(isObj))));
  if (!entries.length) return null;
  return h('dl', { class: 'facts' }, entries.map(([k, v]) => [h('dt', {}, label(k)),
    h('dd', {}, Array.isArray(v) ? (v.length ? v.map(String).join(', ') : '—') : cell(k, v))]));
}

/** The generic view of an object, to `depth` levels of nesting. */
export function generic(obj, skip = [], depth = 0, titles = {}) {
  if (!isObj(obj)) return h('pre', { class: 'json' }, JSON.stringify(obj, null, 2));
  const out = [facts(obj, skip)];
  for (const [k, v] of Object.entries(obj)) {
    if (skip.includes(k)) continue;
    const title = titles[k] ?? label(k);
    if (Array.isArray(v) && v.some(isObj)) out.push(h(depth ? 'h4' : 'h3', {}, title), table(v));
    else if (isObj(v)) {
      const rowsOfObjects = Object.values(v).length && Object.values(v).every(isObj);
      out.push(h(depth ? 'h4' : 'h3', {}, title),
        rowsOfObjects ? table(Object.entries(v).map(([name, r]) => ({ name, ...r })))
          : depth < 2 ? generic(v, [], depth + 1) : h('pre', { class: 'json' }, JSON.stringify(v, null, 2)));
    }
  }
  return h('div', { class: 'generic' }, out);
}

function raw(result) {
  return h('details', { class: 'raw' }, h('summary', {}, 'Raw JSON'), h('pre', { class: 'json' }, JSON.stringify(result, null, 2)));
}

function verdict(ok, yes, no) {
  return h('p', { class: `callout ${ok ? 'ok-box' : 'warn-box'}`, role: 'status' }, ok ? yes : no);
}

const RENDERERS = {
  vacuum(r, job) {
    if (job.dry_run) {
      return [facts(r, ['tables']),
        h('h3', {}, 'Tables'),
        table(r.tables, ['table', 'total_bytes', 'table_bytes', 'index_bytes', 'live_tuples', 'dead_tuples', 'dead_ratio', 'last_vacuum', 'last_autovacuum'])];
    }
    return [facts(r, ['tables']),
      h('h3', {}, 'Tables'),
      table(r.tables, ['table', 'status',
        { key: 'size_before_bytes', label: 'size before', get: (t) => t.size_before_bytes },
        { key: 'size_after_bytes', label: 'size after', get: (t) => t.size_after_bytes },
        { key: 'saved_bytes', label: 'reclaimed', get: (t) => (t.size_after_bytes == null ? null : t.size_before_bytes - t.size_after_bytes) },
        'dead_tuples_before', 'dead_tuples_after', 'duration_ms', 'message'])];
  },
  storage_migrate(r) {
    return [
      'safe_to_switch' in r ? verdict(r.safe_to_switch, `Safe to switch STORAGE_TYPE: ${r.summary ?? 'yes'}`, `Not safe to switch yet: ${r.summary ?? ''}`) : null,
      generic(r, ['summary'])];
  },
  purge_logs(r, job) {
    return [
      h('p', { class: 'callout' }, job.dry_run
        ? `A real run would delete the rows below, older than ${r.days} days (before ${r.cutoff ?? '—'}).`
        : `Deleted the rows below, older than ${r.days} days, in ${num(r.batches)} batches.`),
      generic(r, [], 0, { tables: 'Rows per table', per_tenant: 'Rows per tenant', export: 'Export' })];
  },
  vector_migrate(r, job) {
    return [
      job.dry_run ? null : h('p', { class: `callout ${r.failed ? 'warn-box' : 'ok-box'}` },
        `${num(r.migrated)} datasets copied and verified, ${num(r.switched)} switched to ${r.target}, ${num(r.failed)} failed.`),
      generic(r, [], 0, { datasets: 'Datasets' })];
  },
  backup(r, job) {
    return [
      !job.dry_run && r.set ? h('p', { class: 'callout ok-box' }, 'Backup set ', h('code', {}, r.set),
        r.bytes_written !== undefined ? ` (${bytes(r.bytes_written)} written, ${bytes(r.bytes_deduplicated)} deduplicated)` : null) : null,
      generic(r)];
  },
  restore(r) {
    return [
      r.set ? h('p', { class: 'callout' }, 'Restored set ', h('code', {}, r.set), r.source ? ` from ${r.source}` : null) : null,
      r.warnings?.length ? h('ul', { class: 'callout warn-box' }, r.warnings.map((w) => h('li', {}, typeof w === 'string' ? w : JSON.stringify(w)))) : null,
      generic(r, ['warnings'])];
  },
  orphan_files(r, job) { return orphans(r, job); },
  orphan_records(r, job) { return orphans(r, job); },
};

function orphans(r, job) {
  const plan = !job.params?.confirm;
  const out = [];
  if (plan && !job.dry_run) {
    out.push(h('p', { class: 'callout' }, r.orphans
      ? `This plan lists ${num(r.orphans)} orphans. Nothing has been deleted. "Confirm this plan" deletes exactly these items, each checked again first.`
      : 'This plan found no orphans.'));
  }
  out.push(facts(r, ['sample', 'kept_sample', 'next']));
  if (r.sample) out.push(h('h3', {}, plan ? 'Items in this plan' : 'Sample'), table(r.sample));
  if (r.kept_sample) out.push(h('h3', {}, 'Kept (referenced again since the plan)'), table(r.kept_sample));
  for (const [k, v] of Object.entries(r)) {
    if (['sample', 'kept_sample'].includes(k)) continue;
    if (isObj(v) || (Array.isArray(v) && v.some(isObj))) out.push(generic({ [k]: v }));
  }
  return out;
}

export function renderResult(job) {
  const r = job.result;
  const render = RENDERERS[job.kind];
  let body;
  try {
    body = render && isObj(r) ? render(r, job) : generic(r);
  } catch {
    body = generic(r);
  }
  return h('div', { class: `result result-${job.kind}` }, body, raw(r));
}

export function paramsTable(params) {
  if (!isObj(params) || !Object.keys(params).length) return h('p', { class: 'muted' }, 'No params.');
  return h('dl', { class: 'facts params' }, Object.entries(params).map(([k, v]) => [h('dt', {}, k),
    h('dd', {}, v === null ? h('span', { class: 'muted' }, 'default') : typeof v === 'object' ? h('code', { class: 'wrap' }, JSON.stringify(v)) : h('code', {}, String(v)))]));
}
