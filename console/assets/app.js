// Silt console: a hash-routed page per view, speaking only the /v1 API.
import { put, state, h, api, ApiError, setUnauthorizedHandler } from './lib.js';
import { overviewPage, janitorPage } from './overview.js';
import { topicsPage, topicPage } from './topics.js';
import { groupsPage, groupPage } from './groups.js';
import { keysPage } from './keys.js';

// A page gets a context whose timers and requests end when the user
// leaves it.
class PageContext {
  constructor() {
    this.abort = new AbortController();
    this.timers = [];
    this.cleanups = [];
  }
  get signal() { return this.abort.signal; }
  get live() { return !this.abort.signal.aborted; }
  every(ms, fn) {
    const run = async () => {
      if (!this.live) return;
      try { await fn(); } catch (e) { if (e.name !== 'AbortError') this.fail(e); }
      if (this.live) this.timers.push(setTimeout(run, ms));
    };
    this.timers.push(setTimeout(run, ms));
  }
  onLeave(fn) { this.cleanups.push(fn); }
  fail(e) {
    const box = document.getElementById('page-error');
    if (box) box.textContent = e.message || String(e);
  }
  close() {
    this.abort.abort();
    this.timers.forEach(clearTimeout);
    this.cleanups.forEach((f) => { try { f(); } catch { /* leaving */ } });
  }
}

const routes = [
  [/^\/?$/, 'overview', () => overviewPage],
  [/^\/topics\/?$/, 'topics', () => topicsPage],
  [/^\/topics\/([^/]+)$/, 'topics', () => topicPage],
  [/^\/groups\/?$/, 'groups', () => groupsPage],
  [/^\/groups\/([^/]+)$/, 'groups', () => groupPage],
  [/^\/janitor\/?$/, 'janitor', () => janitorPage],
  [/^\/keys\/?$/, 'keys', () => keysPage],
];

let current = null;

async function route() {
  if (current) current.close();
  const ctx = new PageContext();
  current = ctx;
  const path = location.hash.replace(/^#/, '') || '/';
  const main = document.getElementById('main');
  let found = null;
  for (const [re, nav, page] of routes) {
    const m = path.match(re);
    if (m) { found = { nav, page: page(), args: m.slice(1).map(decodeURIComponent) }; break; }
  }
  document.querySelectorAll('[data-nav]').forEach((a) => {
    if (found && a.dataset.nav === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  if (!found) {
    put(main, h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/' }, 'Back to the overview')));
    return;
  }
  put(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    await found.page(main, ctx, ...found.args);
  } catch (e) {
    if (e.name === 'AbortError' || !ctx.live) return;
    put(main, h('h1', null, 'Could not load this page'), h('p', { class: 'error', role: 'alert' }, e.message || String(e)));
  }
}

function renderWho() {
  const who = document.getElementById('who');
  const w = state.whoami;
  if (!w) { put(who); return; }
  if (w.auth === 'none') {
    put(who, h('span', { class: 'badge warn', title: 'This agent runs with --auth=none' }, 'no auth'));
    return;
  }
  put(who, 
    h('span', null, 'Key ', h('strong', null, w.name)),
    w.admin ? h('span', { class: 'badge' }, 'admin') : null,
    h('button', { type: 'button', onclick: signOut }, 'Forget key'),
  );
}

function signOut() {
  state.token = '';
  state.whoami = null;
  sessionStorage.removeItem('silt.key');
  renderWho();
  askForKey('The key is forgotten in this tab.');
}

let asking = null;
let started = false;

// askForKey shows the key dialog until a key that authenticates is given.
function askForKey(message) {
  if (asking) return asking;
  const dlg = document.getElementById('login');
  const form = document.getElementById('login-form');
  const input = document.getElementById('login-key');
  const err = document.getElementById('login-error');
  err.textContent = message || '';
  input.value = '';
  asking = new Promise((resolve) => {
    form.onsubmit = async (e) => {
      e.preventDefault();
      state.token = input.value.trim();
      try {
        state.whoami = await api('GET', '/v1/whoami');
      } catch (ex) {
        state.token = '';
        err.textContent = ex.status === 401 ? 'That key is not valid (unknown, revoked or expired).' : ex.message;
        return;
      }
      sessionStorage.setItem('silt.key', state.token);
      form.onsubmit = null;
      dlg.close();
      asking = null;
      renderWho();
      resolve();
      if (started) route();
    };
    dlg.oncancel = (e) => e.preventDefault(); // the console needs a key
    dlg.showModal();
    input.focus();
  });
  return asking;
}

async function start() {
  try {
    state.config = await (await fetch('config.json', { cache: 'no-store' })).json();
  } catch {
    state.config = { auth: 'required', version: '' };
  }
  document.getElementById('version').textContent = `Silt ${state.config.version || ''} · auth ${state.config.auth}`;
  setUnauthorizedHandler(() => {
    if (state.config.auth !== 'required') return;
    state.token = '';
    state.whoami = null;
    sessionStorage.removeItem('silt.key');
    renderWho();
    askForKey('The key was refused (revoked or expired?). Give a key to go on.');
  });
  if (state.config.auth === 'required' && !state.token) {
    await askForKey();
  } else {
    try {
      state.whoami = await api('GET', '/v1/whoami');
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 401) throw e;
      await asking;
    }
  }
  renderWho();
  started = true;
  window.addEventListener('hashchange', route);
  route();
}

start().catch((e) => {
  put(document.getElementById('main'), h('p', { class: 'error', role: 'alert' }, 'The console could not start: ' + (e.message || e)));
});
