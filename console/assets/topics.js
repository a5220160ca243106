// Topics: the list (create, delete) and a topic's page (partitions,
// alter, delete, live tail with seek, produce).
import { put, h, field, api, pages, can, denied, enc, num, bytes, retention, time, clock, toast, confirmDialog, table, pager, recordText, b64utf8, authHeaders, unauthorized } from './lib.js';

const PAGE = 50;

export async function topicsPage(main, ctx) {
  const err = h('p', { id: 'page-error', class: 'error', role: 'alert' });
  const listBox = h('div', { id: 'topic-list' });
  put(main, h('h1', null, 'Topics'), err, createForm(), h('section', { class: 'panel', 'aria-labelledby': 'h-topics' },
    h('h2', { id: 'h-topics' }, 'All topics'), listBox));
  const t0 = performance.now();
  const { items, truncated } = await pages('/v1/topics', 'topics', { signal: ctx.signal });
  let page = 0;
  let filter = '';
  const details = new Map(); // name -> {records, bytes} once read
  const filterInput = h('input', { type: 'search', placeholder: 'name contains…', value: '' });
  const tableBox = h('div');
  const render = () => {
    const shown = items.filter((t) => t.name.includes(filter));
    page = Math.min(page, Math.max(0, Math.ceil(shown.length / PAGE) - 1));
    const rows = shown.slice(page * PAGE, (page + 1) * PAGE);
    put(tableBox, table([
      { label: 'Name', cell: (t) => h('a', { href: '#/topics/' + enc(t.name) }, t.name) },
      { label: 'Partitions', num: true, cell: (t) => num(t.partitions) },
      { label: 'Records', num: true, cell: (t) => h('span', { dataset: { records: t.name } }, details.has(t.name) ? num(details.get(t.name).records) : '…') },
      { label: 'Bytes', num: true, cell: (t) => h('span', { dataset: { bytes: t.name } }, details.has(t.name) ? bytes(details.get(t.name).bytes) : '…') },
      { label: 'Retention', cell: (t) => retention(t.config['retention.ms']) + (t.config['retention.bytes'] >= 0 ? ` / ${bytes(t.config['retention.bytes'])}` : '') },
      { label: 'Policy', cell: (t) => t.config['cleanup.policy'] },
      { label: 'Actions', cell: (t) => deleteButton(t.name, () => { items.splice(items.indexOf(t), 1); render(); }) },
    ], rows, { rowAttrs: (t) => ({ dataset: { topic: t.name } }) }),
    pager(shown.length, page, PAGE, (p) => { page = p; render(); }, 'topics'),
    truncated ? h('p', { class: 'muted' }, 'Only the first 100,000 topics are listed.') : null);
    loadDetails(rows.map((t) => t.name));
  };
  // Records and bytes come from each topic's partition states: read only
  // for the rows shown, a few at a time.
  const loadDetails = async (names) => {
    const todo = names.filter((n) => !details.has(n));
    const worker = async () => {
      while (todo.length && ctx.live) {
        const name = todo.shift();
        try {
          const t = await api('GET', `/v1/topics/${enc(name)}?limit=10000`, undefined, { signal: ctx.signal });
          const d = { records: 0, bytes: 0 };
          for (const p of t.partition_states || []) { d.records += p.high_watermark - p.log_start_offset; d.bytes += p.bytes; }
          details.set(name, d);
        } catch (e) {
          if (e.name === 'AbortError') return;
          details.set(name, { records: NaN, bytes: NaN });
        }
        const d = details.get(name);
        const r = listBox.querySelector(`[data-records="${CSS.escape(name)}"]`);
        if (r) r.textContent = num(d.records);
        const b = listBox.querySelector(`[data-bytes="${CSS.escape(name)}"]`);
        if (b) b.textContent = bytes(d.bytes);
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  };
  filterInput.addEventListener('input', () => { filter = filterInput.value.trim(); page = 0; render(); });
  put(listBox, h('div', { class: 'inline' }, field('Filter topics', filterInput)), tableBox);
  render();
  main.dataset.renderMs = String(Math.round(performance.now() - t0));
}

function deleteButton(name, onDeleted, explain) {
  const btn = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete topic ${name}` }, 'Delete');
  if (!can('delete', 'topic', name)) {
    const note = denied(btn, 'Your key may not delete this topic.');
    return explain ? h('span', null, btn, ' ', note) : btn;
  }
  btn.onclick = async () => {
    const ok = await confirmDialog({ title: `Delete topic ${name}?`, word: name, ok: 'Delete topic',
      body: ['Every record of the topic goes, on every agent, and readers of it stop. This cannot be undone.'] });
    if (!ok) return;
    try {
      await api('DELETE', `/v1/topics/${enc(name)}`);
      toast(`Topic ${name} deleted`);
      onDeleted();
    } catch (e) { toast(e.message, true); }
  };
  return btn;
}

function createForm() {
  const name = h('input', { name: 'name', required: true, pattern: '[a-zA-Z0-9._\\-]{1,249}', autocomplete: 'off', spellcheck: 'false' });
  const parts = h('input', { name: 'partitions', type: 'number', min: '1', value: '1', required: true });
  const ret = h('input', { name: 'retention', type: 'number', min: '-1', placeholder: '7 days' });
  const policy = h('select', { name: 'policy' }, ['delete', 'compact', 'compact,delete'].map((p) => h('option', { value: p }, p)));
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Create topic');
  const form = h('form', { class: 'inline', id: 'create-topic', 'aria-labelledby': 'h-create' },
    field('Name', name, 'grow'), field('Partitions', parts), field('Retention (ms, -1 forever)', ret), field('Cleanup policy', policy), submit);
  const mayCreate = can('create', 'cluster') || can('create', 'topic');
  const note = mayCreate ? null : denied(submit, 'Your key may not create topics.');
  form.onsubmit = async (e) => {
    e.preventDefault();
    const config = { 'cleanup.policy': policy.value };
    if (ret.value !== '') config['retention.ms'] = Number(ret.value);
    try {
      await api('POST', '/v1/topics', { name: name.value.trim(), partitions: Number(parts.value), config });
      toast(`Topic ${name.value.trim()} created`);
      location.hash = '#/topics/' + enc(name.value.trim());
    } catch (ex) { toast(ex.message, true); }
  };
  return h('section', { class: 'panel' }, h('h2', { id: 'h-create' }, 'Create a topic'), form, note);
}

// ---------------------------------------------------------------- topic page

export async function topicPage(main, ctx, name) {
  const err = h('p', { id: 'page-error', class: 'error', role: 'alert' });
  let topic = await loadTopic(name, ctx.signal);
  const partsBox = h('div');
  const configBox = h('div');
  let partPage = 0;
  const renderParts = () => {
    const st = topic.partition_states || [];
    put(partsBox, table([
      { label: 'Partition', num: true, cell: (p) => p.partition },
      { label: 'Log start', num: true, cell: (p) => num(p.log_start_offset) },
      { label: 'High watermark', num: true, cell: (p) => num(p.high_watermark) },
      { label: 'Records', num: true, cell: (p) => num(p.high_watermark - p.log_start_offset) },
      { label: 'Bytes', num: true, cell: (p) => bytes(p.bytes) },
      { label: 'Owner', cell: (p) => h('span', { class: 'mono' }, p.owner || '–') },
      { label: 'Lease epoch', num: true, cell: (p) => num(p.lease_epoch) },
    ], st.slice(partPage * PAGE, (partPage + 1) * PAGE), { rowAttrs: (p) => ({ dataset: { partition: p.partition } }) }),
    st.length > PAGE ? pager(st.length, partPage, PAGE, (p) => { partPage = p; renderParts(); }, 'partitions') : null);
  };
  const renderConfig = () => {
    put(configBox, h('dl', { class: 'kv' },
      h('dt', null, 'id'), h('dd', null, topic.id),
      h('dt', null, 'partitions'), h('dd', null, topic.partitions),
      Object.entries(topic.config).map(([k, v]) => [h('dt', null, k), h('dd', null, configText(v))]),
      h('dt', null, 'created'), h('dd', null, time(topic.created_at))));
  };
  const tail = new TailView(topic, ctx);
  put(main, 
    h('h1', null, h('a', { href: '#/topics' }, 'Topics'), ' / ', h('span', { class: 'mono', id: 'topic-name' }, name)),
    err,
    h('div', { class: 'grid' },
      h('section', { class: 'panel', 'aria-labelledby': 'h-config' }, h('h2', { id: 'h-config' }, 'Configuration'), configBox,
        h('div', { class: 'pager' }, deleteButton(name, () => { location.hash = '#/topics'; }, true))),
      alterForm(topic, async () => { topic = await loadTopic(name, ctx.signal); renderConfig(); renderParts(); })),
    h('section', { class: 'panel', 'aria-labelledby': 'h-tail' }, h('h2', { id: 'h-tail' }, 'Live tail'), tail.el),
    produceForm(topic),
    h('section', { class: 'panel', 'aria-labelledby': 'h-parts' }, h('h2', { id: 'h-parts' }, 'Partitions'), partsBox));
  renderConfig();
  renderParts();
  tail.startLatest();
  ctx.onLeave(() => tail.stop());
  ctx.every(5000, async () => {
    topic = await loadTopic(name, ctx.signal);
    renderParts();
    tail.topic = topic;
  });
}

// configText shows a config value; int64 bounds past what a JavaScript
// number holds exactly (the largest int64 means unbounded) are named.
function configText(v) {
  if (typeof v === 'number' && v >= Number.MAX_SAFE_INTEGER) return 'unbounded';
  return String(v);
}

async function loadTopic(name, signal) {
  // The partition states come in pages.
  let cursor = '';
  let topic = null;
  for (let i = 0; i < 20; i++) {
    const t = await api('GET', `/v1/topics/${enc(name)}?limit=1000${cursor ? '&cursor=' + enc(cursor) : ''}`, undefined, { signal });
    if (!topic) topic = t; else topic.partition_states.push(...(t.partition_states || []));
    if (!t.next_cursor) break;
    cursor = t.next_cursor;
  }
  topic.partition_states = topic.partition_states || [];
  return topic;
}

function alterForm(topic, reload) {
  const parts = h('input', { type: 'number', min: String(topic.partitions), value: String(topic.partitions) });
  const ret = h('input', { type: 'number', min: '-1', value: String(topic.config['retention.ms']) });
  const retBytes = h('input', { type: 'number', min: '-1', value: String(topic.config['retention.bytes']) });
  const policy = h('select', null, ['delete', 'compact', 'compact,delete'].map((p) => h('option', { value: p, selected: p === topic.config['cleanup.policy'] }, p)));
  const submit = h('button', { type: 'submit' }, 'Apply changes');
  const form = h('form', { class: 'inline' }, field('Partitions (grow only)', parts), field('retention.ms', ret), field('retention.bytes', retBytes), field('cleanup.policy', policy), submit);
  const note = can('alter', 'topic', topic.name) ? null : denied(submit, 'Your key may not alter this topic.');
  if (note) [parts, ret, retBytes, policy].forEach((c) => { c.disabled = true; });
  form.onsubmit = async (e) => {
    e.preventDefault();
    const body = { config: {} };
    const changes = [];
    if (Number(parts.value) !== topic.partitions) { body.partitions = Number(parts.value); changes.push(`partitions ${topic.partitions} → ${parts.value}`); }
    const cfg = { 'retention.ms': Number(ret.value), 'retention.bytes': Number(retBytes.value), 'cleanup.policy': policy.value };
    for (const [k, v] of Object.entries(cfg)) {
      if (v !== topic.config[k]) { body.config[k] = v; changes.push(`${k} ${topic.config[k]} → ${v}`); }
    }
    if (changes.length === 0) { toast('Nothing to change'); return; }
    if (!Object.keys(body.config).length) delete body.config;
    const ok = await confirmDialog({ title: `Alter topic ${topic.name}?`, ok: 'Apply', danger: false,
      body: [h('ul', null, changes.map((c) => h('li', null, c))), 'Partitions can only grow.'] });
    if (!ok) return;
    try {
      await api('PATCH', `/v1/topics/${enc(topic.name)}`, body);
      toast('Topic changed');
      await reload();
    } catch (ex) { toast(ex.message, true); }
  };
  return h('section', { class: 'panel', 'aria-labelledby': 'h-alter' }, h('h2', { id: 'h-alter' }, 'Alter'), form, note);
}

function produceForm(topic) {
  const key = h('input', { autocomplete: 'off', spellcheck: 'false', placeholder: 'none' });
  const value = h('textarea', { rows: '3', spellcheck: 'false', placeholder: '{"hello": "world"}' });
  const headers = h('textarea', { rows: '2', spellcheck: 'false', placeholder: 'trace-id: abc' });
  const part = h('select', null, h('option', { value: '' }, 'by key (or round-robin)'),
    Array.from({ length: Math.min(topic.partitions, 1000) }, (_, i) => h('option', { value: String(i) }, String(i))));
  const asJSON = h('input', { type: 'checkbox', checked: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Produce');
  const result = h('p', { class: 'status', role: 'status' });
  const form = h('form', { id: 'produce-form' },
    h('div', { class: 'inline' }, field('Key', key, 'grow'), field('Partition', part)),
    field('Value', value), h('label', { class: 'check' }, asJSON, 'Send the value as JSON when it parses as JSON (else as text bytes)'),
    field('Headers, one "name: value" per line', headers), h('div', { class: 'pager' }, submit), result);
  const note = can('produce', 'topic', topic.name) ? null : denied(submit, 'Your key may not produce to this topic.');
  if (note) [key, value, headers, part, asJSON].forEach((c) => { c.disabled = true; });
  form.onsubmit = async (e) => {
    e.preventDefault();
    const rec = {};
    if (key.value !== '') rec.key_b64 = b64utf8(key.value);
    let parsed;
    if (asJSON.checked) { try { parsed = JSON.parse(value.value); } catch { parsed = undefined; } }
    if (parsed !== undefined && parsed !== null) rec.value = parsed; else rec.value_b64 = b64utf8(value.value);
    const hs = headers.value.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
      const i = l.indexOf(':');
      return i < 0 ? { key: l, value_b64: '' } : { key: l.slice(0, i).trim(), value_b64: b64utf8(l.slice(i + 1).trim()) };
    });
    if (hs.length) rec.headers = hs;
    if (part.value !== '') rec.partition = Number(part.value);
    try {
      const r = await api('POST', `/v1/topics/${enc(topic.name)}/records`, { records: [rec] });
      result.textContent = `Written to partition ${r.offsets[0].partition} at offset ${r.offsets[0].offset}.`;
    } catch (ex) { result.textContent = ''; toast(ex.message, true); }
  };
  return h('section', { class: 'panel', 'aria-labelledby': 'h-produce' }, h('h2', { id: 'h-produce' }, 'Produce a record'), form, note);
}

// ------------------------------------------------------------------ live tail

const CAP = 5000; // records kept in the page
const ROW = 26; // px, fixed: the list renders only the rows in view
const MAX_STREAMS = 4; // browsers allow six connections per host over HTTP/1.1

// TailView tails a topic's partitions over the SSE stream endpoint (the
// one clients use), read with fetch so the key travels in the
// Authorization header. The list keeps the last CAP records and renders
// only the rows in view.
class TailView {
  constructor(topic, ctx) {
    this.topic = topic;
    this.ctx = ctx;
    this.records = [];
    this.shown = [];
    this.next = new Map(); // partition -> next offset to read
    this.streams = null; // AbortController of the running streams
    this.paused = false;
    this.follow = true;
    this.selected = null;
    this.dirty = false;
    this.gen = 0;
    this.build();
  }

  build() {
    const n = this.topic.partitions;
    this.part = h('select', { id: 'tail-partition' },
      n <= MAX_STREAMS ? h('option', { value: 'all' }, `all (${n})`) : null,
      Array.from({ length: Math.min(n, 1000) }, (_, i) => h('option', { value: String(i) }, String(i))));
    this.from = h('select', { id: 'tail-from' }, [['latest', 'Latest'], ['earliest', 'Earliest'], ['offset', 'Offset'], ['time', 'Time']].map(([v, l]) => h('option', { value: v }, l)));
    this.at = h('input', { id: 'tail-at', placeholder: 'offset', inputmode: 'numeric', hidden: true, spellcheck: 'false' });
    this.when = h('input', { id: 'tail-time', type: 'datetime-local', step: '1', hidden: true });
    this.from.onchange = () => {
      this.at.hidden = this.from.value !== 'offset';
      this.when.hidden = this.from.value !== 'time';
    };
    this.seekBtn = h('button', { type: 'submit', id: 'tail-seek', class: 'primary' }, 'Seek');
    this.pauseBtn = h('button', { type: 'button', id: 'tail-pause', onclick: () => this.togglePause() }, 'Pause');
    this.clearBtn = h('button', { type: 'button', onclick: () => { this.records = []; this.selected = null; this.refilter(); } }, 'Clear');
    this.filter = h('input', { type: 'search', id: 'tail-filter', placeholder: 'key or value contains…', spellcheck: 'false' });
    this.filter.oninput = () => this.refilter();
    this.pretty = h('input', { type: 'checkbox', id: 'tail-pretty', checked: true, onchange: () => this.renderDetail() });
    const atWrap = h('div', { class: 'field' }, h('label', { for: this.at.id }, 'Offset / time'), this.at, this.when);
    this.form = h('form', { class: 'tail-controls', onsubmit: (e) => { e.preventDefault(); this.seek(); } },
      field('Partition', this.part), field('From', this.from), atWrap, this.seekBtn, this.pauseBtn, this.clearBtn,
      field('Filter', this.filter, 'grow'), h('label', { class: 'check' }, this.pretty, 'Pretty-print JSON'));
    this.status = h('p', { class: 'status', id: 'tail-status', 'aria-live': 'polite' });
    this.list = h('div', { class: 'tail', id: 'tail-list', tabindex: '0', role: 'listbox', 'aria-label': 'Records, newest last' });
    this.spacer = h('div', { class: 'spacer' });
    this.list.append(this.spacer);
    this.list.addEventListener('scroll', () => {
      this.follow = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - ROW;
      this.renderRows();
    });
    this.list.addEventListener('keydown', (e) => this.onKey(e));
    this.detail = h('div', { class: 'detail', id: 'tail-detail', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Select a record to see it whole.'));
    this.el = h('div', null, this.form, this.status, h('div', { class: 'tail-wrap' }, this.list, this.detail));
    if (!can('consume', 'topic', this.topic.name)) {
      const note = denied(this.seekBtn, 'Your key may not consume this topic: the tail is off.');
      [this.part, this.from, this.pauseBtn, this.filter].forEach((c) => { c.disabled = true; });
      this.el.prepend(h('p', null, note));
      this.allowed = false;
    } else {
      this.allowed = true;
    }
  }

  partitions() {
    return this.part.value === 'all' ? Array.from({ length: this.topic.partitions }, (_, i) => i) : [Number(this.part.value)];
  }

  startLatest() {
    if (!this.allowed) return;
    const from = new Map(this.partitions().map((p) => [p, 'latest']));
    this.run(from, true);
  }

  async seek() {
    if (!this.allowed) return;
    const parts = this.partitions();
    const states = new Map((this.topic.partition_states || []).map((s) => [s.partition, s]));
    const from = new Map();
    try {
      for (const p of parts) {
        const st = states.get(p) || { log_start_offset: 0, high_watermark: 0 };
        switch (this.from.value) {
          case 'latest': from.set(p, 'latest'); break;
          case 'earliest': from.set(p, 'earliest'); break;
          case 'offset': {
            const n = Number(this.at.value);
            if (!Number.isInteger(n) || n < 0) { toast('Give an offset: a whole number', true); return; }
            from.set(p, Math.min(Math.max(n, st.log_start_offset), st.high_watermark));
            break;
          }
          case 'time': {
            const t = Date.parse(this.when.value);
            if (Number.isNaN(t)) { toast('Give a date and time', true); return; }
            const r = await api('GET', `/v1/topics/${enc(this.topic.name)}/partitions/${p}/offsets?timestamp=${t}`, undefined, { signal: this.ctx.signal });
            from.set(p, r.offset === null ? 'latest' : r.offset);
            break;
          }
        }
      }
    } catch (e) {
      if (e.name !== 'AbortError') toast(e.message, true);
      return;
    }
    this.records = [];
    this.selected = null;
    this.refilter();
    this.follow = true;
    this.run(from, false);
  }

  togglePause() {
    if (this.paused) {
      this.paused = false;
      this.pauseBtn.textContent = 'Pause';
      const from = new Map(this.partitions().map((p) => [p, this.next.has(p) ? this.next.get(p) : 'latest']));
      this.run(from, false);
    } else {
      this.paused = true;
      this.pauseBtn.textContent = 'Resume';
      this.stop();
      this.setStatus();
    }
  }

  stop() {
    if (this.streams) this.streams.abort();
    this.streams = null;
  }

  // run (re)starts one stream per partition from the given offsets.
  run(from, keep) {
    this.stop();
    this.paused = false;
    this.pauseBtn.textContent = 'Pause';
    const ac = new AbortController();
    this.streams = ac;
    this.gen++;
    if (!keep) this.next.clear();
    this.openStreams = new Set(); // partitions whose stream of this run is open
    for (const [p, off] of from) this.stream(p, off, ac.signal, this.gen);
    this.setStatus();
  }

  async stream(p, off, signal, gen) {
    let offset = off;
    let backoff = 500;
    while (!signal.aborted && this.ctx.live) {
      try {
        const r = await fetch(`/v1/topics/${enc(this.topic.name)}/partitions/${p}/stream?offset=${offset}`,
          { headers: authHeaders({ Accept: 'text/event-stream' }), signal, cache: 'no-store' });
        if (!r.ok) {
          const prob = await r.json().catch(() => ({}));
          throw Object.assign(new Error(prob.detail || `stream answered ${r.status}`), { status: r.status });
        }
        const open = this.openStreams;
        open.add(p);
        this.setStatus();
        backoff = 500;
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let ended = false;
        try {
          while (!ended) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value.replace(/\r\n?/g, '\n');
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, i);
              buf = buf.slice(i + 2);
              let event = 'message', data = '';
              for (const line of block.split('\n')) {
                if (line.startsWith(':')) continue;
                const c = line.indexOf(':');
                const k = c < 0 ? line : line.slice(0, c);
                const v = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
                if (k === 'event') event = v; else if (k === 'data') data += (data ? '\n' : '') + v;
              }
              if (event === 'record') {
                const rec = JSON.parse(data);
                rec.partition = p;
                if (gen === this.gen) this.add(rec);
                offset = rec.offset + 1;
                this.next.set(p, offset);
              } else if (event === 'error') {
                const prob = JSON.parse(data || '{}');
                throw Object.assign(new Error(prob.detail || 'the stream failed'), { status: prob.status, code: prob.code });
              } else if (event === 'end') {
                ended = true;
              }
            }
          }
        } finally {
          open.delete(p);
          this.setStatus();
        }
      } catch (e) {
        if (signal.aborted || e.name === 'AbortError') return;
        if (e.status && e.status >= 400 && e.status < 500 && e.status !== 429) {
          if (e.status === 401) unauthorized(e); // the key was revoked or expired
          this.setStatus(`partition ${p}: ${e.message}`);
          return;
        }
      }
      // The agent ended the stream (shutdown) or the connection broke:
      // go on where it stopped, possibly through another agent.
      await new Promise((res) => setTimeout(res, backoff));
      backoff = Math.min(backoff * 2, 8000);
    }
  }

  add(rec) {
    const k = recordText(rec, 'key'), v = recordText(rec, 'value');
    rec._k = k.text;
    rec._v = v.text;
    this.records.push(rec);
    if (this.records.length > CAP) this.records.splice(0, this.records.length - CAP);
    if (!this.dirty) {
      this.dirty = true;
      requestAnimationFrame(() => { this.dirty = false; this.refilter(); });
    }
  }

  matches(r) {
    const f = this.filter.value;
    return !f || (r._k !== null && r._k.includes(f)) || (r._v !== null && r._v.includes(f));
  }

  refilter() {
    this.shown = this.filter.value ? this.records.filter((r) => this.matches(r)) : this.records;
    this.spacer.style.height = this.shown.length * ROW + 'px';
    if (this.follow) this.list.scrollTop = this.list.scrollHeight;
    this.renderRows();
    this.setStatus();
  }

  renderRows() {
    const first = Math.max(0, Math.floor(this.list.scrollTop / ROW) - 5);
    const last = Math.min(this.shown.length, Math.ceil((this.list.scrollTop + (this.list.clientHeight || 420)) / ROW) + 5);
    const rows = [];
    for (let i = first; i < last; i++) {
      const r = this.shown[i];
      const row = h('div', { class: 'row' + (r === this.selected ? ' sel' : ''), role: 'option', 'aria-selected': r === this.selected ? 'true' : 'false',
        dataset: { offset: r.offset, partition: r.partition }, onclick: () => this.select(r) },
        h('span', { class: 'p' }, `${r.partition}:${r.offset}`), h('span', { class: 't' }, clock(r.timestamp)),
        h('span', { class: 'key' }, r._k === null ? '∅' : r._k), h('span', { class: 'val' }, r._v === null ? '∅ (tombstone)' : r._v));
      row.style.top = i * ROW + 'px';
      rows.push(row);
    }
    put(this.spacer, ...rows);
  }

  onKey(e) {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    e.preventDefault();
    let i = this.shown.indexOf(this.selected);
    i = e.key === 'ArrowDown' ? Math.min(this.shown.length - 1, i + 1) : Math.max(0, i - 1);
    if (this.shown[i]) {
      this.select(this.shown[i]);
      const top = i * ROW;
      if (top < this.list.scrollTop) this.list.scrollTop = top;
      else if (top + ROW > this.list.scrollTop + this.list.clientHeight) this.list.scrollTop = top + ROW - this.list.clientHeight;
    }
  }

  select(r) {
    this.selected = r;
    this.renderRows();
    this.renderDetail();
  }

  renderDetail() {
    const r = this.selected;
    if (!r) return;
    const pretty = (which) => {
      const t = recordText(r, which);
      if (t.text === null) return '∅ (null)';
      if (!this.pretty.checked) return t.text;
      let j = t.json;
      if (j === undefined) { try { j = JSON.parse(t.text); } catch { return t.text; } }
      return JSON.stringify(j, null, 2);
    };
    const hs = (r.headers || []).map((x) => `${x.key}: ${recordText(x, 'value').text ?? '∅'}`).join('\n');
    put(this.detail, 
      h('dl', { class: 'kv' }, h('dt', null, 'partition'), h('dd', null, r.partition), h('dt', null, 'offset'), h('dd', null, r.offset),
        h('dt', null, 'timestamp'), h('dd', null, `${time(r.timestamp)} (${r.timestamp})`)),
      h('h3', { class: 'l' }, 'Key'), h('pre', null, pretty('key')),
      h('h3', { class: 'l' }, 'Value'), h('pre', { id: 'tail-detail-value' }, pretty('value')),
      hs ? [h('h3', { class: 'l' }, 'Headers'), h('pre', null, hs)] : null);
  }

  setStatus(extra) {
    const live = !this.paused && !!this.streams && !!this.openStreams && this.openStreams.size > 0;
    const filtered = this.filter.value ? `, ${num(this.shown.length)} match` : '';
    put(this.status, h('span', { class: 'live-dot' + (live ? '' : ' off') }),
      `${this.paused ? 'paused' : live ? 'live' : 'connecting…'} · ${num(this.records.length)} records${filtered}` +
      (this.records.length >= CAP ? ` (the last ${num(CAP)} are kept)` : '') + (extra ? ` · ${extra}` : ''));
    this.status.dataset.state = this.paused ? 'paused' : live ? 'live' : 'connecting';
  }
}

