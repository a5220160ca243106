// Small helpers shared by the console's pages: DOM building, the API
// client, permissions from /v1/whoami, formatting, dialogs and a chart.

export const state = {
  token: sessionStorage.getItem('silt.key') || '',
  config: { auth: 'required', version: '' },
  whoami: null,
};

// h builds an element: h('a', {href: '#/'}, 'text', child...). Text is
// always set as text, never parsed as HTML.
export function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (typeof v === 'boolean' || k === 'value') el[k] = v;
      else el.setAttribute(k, String(v));
    }
  }
  for (const c of kids.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// put replaces an element's children, skipping null, undefined and false.
export function put(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
}

let uidSeq = 0;
export const uid = (p) => `${p}-${++uidSeq}`;

// field is a labelled control: field('Name', input).
export function field(label, control, cls) {
  if (!control.id) control.id = uid('f');
  return h('div', { class: 'field' + (cls ? ' ' + cls : '') }, h('label', { for: control.id }, label), control);
}

export const enc = encodeURIComponent;

// ApiError is a problem answer (RFC 9457) or a network failure.
export class ApiError extends Error {
  constructor(status, problem, message) {
    super(message);
    this.status = status;
    this.problem = problem;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }
// unauthorized reports a 401 that did not come through api() (a stream).
export function unauthorized(err) { onUnauthorized(err); }

export function authHeaders(extra) {
  const headers = Object.assign({}, extra);
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  return headers;
}

// api calls the /v1 API with the tab's key; it resolves to the parsed
// JSON body (null for 204) and rejects with an ApiError.
export async function api(method, path, body, opts = {}) {
  const headers = authHeaders({ Accept: 'application/json' });
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, { method, headers, body: payload, signal: opts.signal, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, null, 'the agent did not answer');
  }
  if (r.status === 204) return null;
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!r.ok) {
    const msg = (data && (data.detail || data.title)) || `${r.status} ${r.statusText}`;
    const err = new ApiError(r.status, data, msg);
    if (r.status === 401) onUnauthorized(err);
    throw err;
  }
  return data;
}

// pages follows next_cursor: every item of a listing, up to maxPages.
export async function pages(path, field, opts = {}) {
  const out = [];
  let cursor = '';
  const limit = opts.limit || 1000;
  for (let i = 0; i < (opts.maxPages || 100); i++) {
    const sep = path.includes('?') ? '&' : '?';
    const page = await api('GET', `${path}${sep}limit=${limit}${cursor ? '&cursor=' + enc(cursor) : ''}`, undefined, opts);
    out.push(...(page[field] || []));
    if (!page.next_cursor) return { items: out, truncated: false };
    cursor = page.next_cursor;
  }
  return { items: out, truncated: true };
}

// can says whether the tab's key may do op on a resource, by the ACL
// rules of docs/security.md: literal names ("*" is every name) and
// prefixes; describe is implied by produce, consume, alter and delete.
// name undefined asks whether some resource of the type allows it.
export function can(op, type, name) {
  const w = state.whoami;
  if (!w) return false;
  if (w.auth === 'none' || w.admin) return true;
  for (const a of w.acls || []) {
    if (a.resource_type !== type) continue;
    if (name !== undefined && type !== 'cluster') {
      const match = a.pattern_type === 'prefix' ? name.startsWith(a.name) : (a.name === '*' || a.name === name);
      if (!match) continue;
    }
    const ops = a.operations || [];
    if (ops.includes(op)) return true;
    if (op === 'describe' && ops.some((o) => o === 'produce' || o === 'consume' || o === 'alter' || o === 'delete')) return true;
  }
  return false;
}

export const isAdmin = () => !!state.whoami && (state.whoami.auth === 'none' || state.whoami.admin);

// denied marks a control the key may not use: disabled, with the reason
// as its description (not an error).
export function denied(control, reason) {
  control.disabled = true;
  control.title = reason;
  const note = h('span', { class: 'denied', id: uid('why') }, reason);
  control.setAttribute('aria-describedby', note.id);
  return note;
}

// Formatting.
const nf = new Intl.NumberFormat('en');
export const num = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : nf.format(n));
export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 2 : 1)) + ' ' + u[i];
}
export function rate(n, unit) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  if (unit === 'B') return bytes(n) + '/s';
  return (n >= 100 ? nf.format(Math.round(n)) : n.toFixed(n >= 10 ? 1 : 2)) + '/s';
}
export function duration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '–';
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
}
export function retention(ms) {
  if (ms === undefined || ms === null) return '–';
  if (ms < 0) return 'forever';
  return duration(ms).replace(/ 0[smh]$/, '');
}
export function time(t) {
  if (!t) return '–';
  const d = typeof t === 'number' ? new Date(t) : new Date(t);
  return d.toLocaleString(undefined, { hour12: false });
}
export function clock(ms) {
  return new Date(ms).toLocaleTimeString(undefined, { hour12: false });
}

// Toasts (status messages, announced to screen readers).
export function toast(msg, bad) {
  const el = h('div', { class: 'toast' + (bad ? ' bad' : '') }, msg);
  document.getElementById('toasts').append(el);
  setTimeout(() => el.remove(), bad ? 8000 : 4000);
}

// confirm asks in a modal dialog; with word, the user must type it.
export function confirmDialog({ title, body, ok = 'Confirm', word, danger = true }) {
  const dlg = document.getElementById('confirm');
  const form = document.getElementById('confirm-form');
  const input = document.getElementById('confirm-input');
  const okBtn = document.getElementById('confirm-ok');
  document.getElementById('confirm-title').textContent = title;
  const bodyEl = document.getElementById('confirm-body');
  put(bodyEl, ...[].concat(body || []).map((b) => (b instanceof Node ? b : h('p', null, b))));
  const typed = document.getElementById('confirm-typed');
  typed.hidden = !word;
  document.getElementById('confirm-word').textContent = word || '';
  input.value = '';
  okBtn.textContent = ok;
  okBtn.className = danger ? 'danger' : 'primary';
  okBtn.disabled = !!word;
  input.oninput = () => { okBtn.disabled = input.value !== word; };
  return new Promise((resolve) => {
    const done = (v) => {
      form.onsubmit = null;
      document.getElementById('confirm-cancel').onclick = null;
      dlg.onclose = null;
      if (dlg.open) dlg.close();
      resolve(v);
    };
    form.onsubmit = (e) => { e.preventDefault(); if (!word || input.value === word) done(true); };
    document.getElementById('confirm-cancel').onclick = () => done(false);
    dlg.onclose = () => done(false);
    dlg.showModal();
    (word ? input : okBtn).focus();
  });
}

// table builds a table from column specs {label, num, cell(row)}.
export function table(cols, rows, opts = {}) {
  const head = h('tr', null, cols.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)));
  const body = h('tbody', null, rows.map((r) => h('tr', opts.rowAttrs ? opts.rowAttrs(r) : null,
    cols.map((c) => h('td', { class: c.num ? 'num' : null }, c.cell(r))))));
  const t = h('table', null, opts.caption ? h('caption', { class: 'sr' }, opts.caption) : null, h('thead', null, head), body);
  return h('div', { class: 'scroll' }, t);
}

// pager renders page controls for n items of size per page.
export function pager(n, page, size, onPage, label) {
  const pagesN = Math.max(1, Math.ceil(n / size));
  const prev = h('button', { type: 'button', onclick: () => onPage(page - 1), disabled: page <= 0, 'aria-label': `Previous page of ${label}` }, '‹ Previous');
  const next = h('button', { type: 'button', onclick: () => onPage(page + 1), disabled: page >= pagesN - 1, 'aria-label': `Next page of ${label}` }, 'Next ›');
  const from = n === 0 ? 0 : page * size + 1;
  return h('div', { class: 'pager' }, prev, h('span', { class: 'muted' }, `${num(from)}–${num(Math.min(n, (page + 1) * size))} of ${num(n)}`), next);
}

// drawChart draws one series [{t, v}] as a line over [from, to] (ms) on
// a canvas, sized for the device's pixels. It records the points drawn in
// data-points and a summary in the canvas's label.
export function drawChart(canvas, series, { from, to, label }) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600;
  const hgt = canvas.clientHeight || 220;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(hgt * dpr);
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, hgt);
  const pts = series.filter((p) => p.t >= from && p.t <= to);
  canvas.dataset.points = String(pts.length);
  const left = 56, right = 10, top = 10, bottom = 24;
  const pw = w - left - right, ph = hgt - top - bottom;
  const max = Math.max(1, ...pts.map((p) => p.v)) * 1.1;
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#5c6a6e';
  g.strokeStyle = '#e3e6e1';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = top + ph - (ph * i) / 4;
    g.beginPath(); g.moveTo(left, y); g.lineTo(left + pw, y); g.stroke();
    const v = (max * i) / 4;
    g.textAlign = 'right';
    g.fillText(v >= 1000 ? nf.format(Math.round(v)) : (Math.round(v * 10) / 10).toString(), left - 6, y + 4);
  }
  for (let i = 0; i <= 4; i++) {
    g.textAlign = i === 0 ? 'left' : i === 4 ? 'right' : 'center';
    const t = from + ((to - from) * i) / 4;
    const fmt = to - from <= 10 * 60 * 1000 ? { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false } : { hour: '2-digit', minute: '2-digit', hour12: false };
    g.fillText(new Date(t).toLocaleTimeString(undefined, fmt), left + (pw * i) / 4, hgt - 6);
  }
  const x = (t) => left + ((t - from) / (to - from)) * pw;
  const y = (v) => top + ph - (v / max) * ph;
  if (pts.length > 0) {
    g.beginPath();
    pts.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
    g.strokeStyle = '#1d4e5f';
    g.lineWidth = 2;
    g.stroke();
    g.lineTo(x(pts[pts.length - 1].t), y(0));
    g.lineTo(x(pts[0].t), y(0));
    g.closePath();
    g.fillStyle = 'rgba(29, 78, 95, 0.12)';
    g.fill();
    g.fillStyle = '#1d4e5f';
    for (const p of pts.length <= 200 ? pts : [pts[pts.length - 1]]) {
      g.beginPath(); g.arc(x(p.t), y(p.v), 2.5, 0, Math.PI * 2); g.fill();
    }
  } else {
    g.textAlign = 'center';
    g.fillText('no samples yet', left + pw / 2, top + ph / 2);
  }
  const last = pts.length ? pts[pts.length - 1].v : null;
  canvas.setAttribute('aria-label', `${label}: ${pts.length} samples` + (last === null ? '' : `, latest ${nf.format(last)}`));
}

// decode renders record bytes for people: JSON fields as their JSON
// text, base64 fields as UTF-8 text when they are, else as base64.
const utf8 = new TextDecoder('utf-8', { fatal: true });
export function recordText(r, which) {
  if (r[which] !== undefined) return { text: JSON.stringify(r[which]), json: r[which] };
  const b64 = r[which + '_b64'];
  if (b64 === undefined) return { text: null };
  try {
    const bin = atob(b64);
    const arr = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) arr[i] = bin.charCodeAt(i);
    return { text: utf8.decode(arr) };
  } catch {
    return { text: 'base64:' + b64, binary: true };
  }
}

export function b64utf8(s) {
  const bytesArr = new TextEncoder().encode(s);
  let bin = '';
  for (const b of bytesArr) bin += String.fromCharCode(b);
  return btoa(bin);
}
