// Overview (agents, throughput, health) and janitor pages. Both read
// GET /v1/stats, which answers with the figures of whichever agent the
// load balancer picked; rates come from two answers of the same agent,
// and the browser keeps a few minutes of them.
import { put, h, api, can, num, bytes, rate, duration, table, drawChart } from './lib.js';

// samples: agent id -> last answers of /v1/stats (oldest first).
const samples = new Map();
// history of cluster-wide produce records/s, kept while the tab is open.
const throughput = [];
const KEEP_MS = 10 * 60 * 1000;

// sum adds the series of a family whose labels include every pair given.
function sum(metrics, name, labels = {}) {
  let total = 0;
  for (const [k, v] of Object.entries(metrics)) {
    const brace = k.indexOf('{');
    const n = brace < 0 ? k : k.slice(0, brace);
    if (n !== name) continue;
    if (Object.entries(labels).every(([lk, lv]) => k.includes(`${lk}="${lv}"`))) total += v;
  }
  return total;
}

// labelValues returns the values a label takes in a family, with sums.
function byLabel(metrics, name, label, filter = {}) {
  const out = {};
  for (const [k, v] of Object.entries(metrics)) {
    if (!k.startsWith(name + '{')) continue;
    if (!Object.entries(filter).every(([lk, lv]) => k.includes(`${lk}="${lv}"`))) continue;
    const m = k.match(new RegExp(`${label}="([^"]*)"`));
    if (m) out[m[1]] = (out[m[1]] || 0) + v;
  }
  return out;
}

const figures = {
  produceRecords: (m) => sum(m, 'silt_batcher_flush_records_sum'),
  storedBytes: (m) => sum(m, 'silt_batcher_segment_size_bytes_sum'),
  fetchRecords: (m) => sum(m, 'silt_fetch_records_total'),
  fetchBytes: (m) => sum(m, 'silt_fetch_record_bytes_total'),
  puts: (m) => sum(m, 'silt_objectstore_requests_total', { op: 'put' }),
  flushes: (m) => sum(m, 'silt_batcher_flushes_total'),
};

async function sample(signal) {
  const s = await api('GET', '/v1/stats', undefined, { signal });
  const at = Date.parse(s.at);
  const list = samples.get(s.agent_id) || [];
  list.push({ at, s, seen: Date.now() });
  while (list.length > 2 && list[0].at < at - KEEP_MS) list.shift();
  samples.set(s.agent_id, list);
  const rp = clusterRate('produceRecords');
  if (rp !== null) {
    throughput.push({ t: Date.now(), v: rp });
    while (throughput.length && throughput[0].t < Date.now() - KEEP_MS) throughput.shift();
  }
  return s;
}

// agentRate is a figure's rate over an agent's last two answers (null
// with fewer, or when they are old).
function agentRate(list, fig) {
  if (!list || list.length < 2) return null;
  const b = list[list.length - 1], a = list[list.length - 2];
  if (Date.now() - b.seen > 60_000 || b.at <= a.at) return null;
  const d = figures[fig](b.s.metrics) - figures[fig](a.s.metrics);
  return Math.max(0, d) / ((b.at - a.at) / 1000);
}

function clusterRate(fig) {
  let total = null;
  for (const list of samples.values()) {
    const r = agentRate(list, fig);
    if (r !== null) total = (total || 0) + r;
  }
  return total;
}

function latest(id) {
  const list = samples.get(id);
  return list && list.length ? list[list.length - 1] : null;
}

function card(label, value, hint) {
  return h('div', { class: 'card' }, h('div', { class: 'v' }, value), h('div', { class: 'k' }, label), hint ? h('div', { class: 'k' }, hint) : null);
}

function check(name, v) {
  if (v === undefined) return h('span', { class: 'badge' }, 'unknown');
  return h('span', { class: 'badge ' + (v === 'ok' ? 'ok' : 'bad'), title: v === 'ok' ? `${name} answers` : v }, v === 'ok' ? 'ok' : 'failing');
}

export async function overviewPage(main, ctx) {
  const head = h('h1', null, 'Overview', h('span', { class: 'sub' }, 'is data flowing, and which agent owns what'));
  const err = h('p', { id: 'page-error', class: 'error', role: 'alert' });
  const cards = h('div', { class: 'cards', 'aria-live': 'off' });
  const chart = h('canvas', { class: 'chart', id: 'throughput-chart', role: 'img', 'aria-label': 'produce records per second' });
  const agentsBox = h('div');
  const healthBox = h('div');
  put(main, head, err, cards,
    h('div', { class: 'grid' },
      h('section', { class: 'panel', 'aria-labelledby': 'h-health' }, h('h2', { id: 'h-health' }, 'Health'), healthBox),
      h('section', { class: 'panel', 'aria-labelledby': 'h-tp' }, h('h2', { id: 'h-tp' }, 'Produce, records/s (while this tab is open, up to 10 min)'), chart)),
    h('section', { class: 'panel', 'aria-labelledby': 'h-agents' }, h('h2', { id: 'h-agents' }, 'Agents'), agentsBox));

  const mayStats = can('describe', 'cluster');
  if (!mayStats) {
    const why = 'Your key may not describe the cluster: agents, rates and health are hidden.';
    put(cards, h('p', { class: 'denied' }, why));
    put(agentsBox, h('p', { class: 'denied' }, why));
    put(healthBox, h('p', { class: 'denied' }, why));
    drawChart(chart, [], { from: Date.now() - KEEP_MS, to: Date.now(), label: 'produce records per second' });
    return;
  }

  let cluster = null;
  const render = () => {
    const pr = clusterRate('produceRecords'), sb = clusterRate('storedBytes');
    const fr = clusterRate('fetchRecords'), fb = clusterRate('fetchBytes'), pu = clusterRate('puts');
    let lastFlush = null;
    for (const list of samples.values()) {
      const f = list[list.length - 1].s.last_flush_at;
      if (f && (!lastFlush || Date.parse(f) > lastFlush)) lastFlush = Date.parse(f);
    }
    const agents = cluster ? cluster.agents : [];
    const owned = agents.reduce((n, a) => n + a.partitions.length, 0);
    put(cards, 
      card('Produce', rate(pr, 'rec'), pr === null ? 'measuring…' : 'records/s'),
      card('Stored', rate(sb, 'B'), 'segment bytes'),
      card('Fetch', rate(fr, 'rec'), fb === null ? 'records/s' : rate(fb, 'B')),
      card('Object store PUTs', rate(pu, 'rec'), 'per second'),
      card('Last flush', lastFlush ? duration(Date.now() - lastFlush) + ' ago' : 'none yet', 'acknowledged produce'),
      card('Agents', num(agents.length), `${num(owned)} partitions owned`),
    );
    // The chart spans what this tab has seen (30 s at least, 10 min at most).
    const now = Date.now();
    const from = Math.max(now - KEEP_MS, Math.min(throughput.length ? throughput[0].t : now, now - 30_000));
    drawChart(chart, throughput, { from, to: now, label: 'produce records per second' });
    // Health: the answering agents' readiness checks.
    const rows = [...samples.entries()].map(([id, list]) => ({ id, s: list[list.length - 1].s, seen: list[list.length - 1].seen }));
    put(healthBox, rows.length === 0 ? h('p', { class: 'muted' }, 'Waiting for the first answer…') : table([
      { label: 'Agent', cell: (r) => h('span', { class: 'mono' }, r.id) },
      { label: 'Postgres', cell: (r) => check('Postgres', r.s.checks.postgres) },
      { label: 'Object store', cell: (r) => check('The object store', r.s.checks.objectstore) },
      { label: 'Flushes', cell: (r) => check('Flushing', r.s.checks.flush) },
      { label: 'Seen', cell: (r) => duration(Date.now() - r.seen) + ' ago' },
    ], rows));
    put(agentsBox, !cluster ? h('p', { class: 'muted' }, 'Loading…') : table([
      { label: 'Agent', cell: (a) => h('span', { class: 'mono' }, a.id) },
      { label: 'Address', cell: (a) => h('span', { class: 'mono' }, a.address) },
      { label: 'Version', cell: (a) => a.version },
      { label: 'Uptime', cell: (a) => duration(Date.now() - Date.parse(a.started_at)) },
      { label: 'Heartbeat', cell: (a) => duration(Date.now() - Date.parse(a.heartbeat_at)) + ' ago' },
      { label: 'Partitions', num: true, cell: (a) => num(a.partitions.length) },
      { label: 'Lease epochs', cell: (a) => epochs(a.partitions) },
      { label: 'Produce', num: true, cell: (a) => rate(agentRate(samples.get(a.id), 'produceRecords'), 'rec') },
      { label: 'PUTs', num: true, cell: (a) => rate(agentRate(samples.get(a.id), 'puts'), 'rec') },
    ], agents) , cluster && cluster.truncated ? h('p', { class: 'muted' }, 'Only the first 20,000 owned partitions are counted.') : null);
  };
  const loadCluster = async () => {
    // The owned partitions come in pages; agents repeat on every page.
    const byId = new Map();
    let cursor = '', truncated = false;
    for (let i = 0; ; i++) {
      if (i === 20) { truncated = true; break; }
      const page = await api('GET', '/v1/cluster?limit=1000' + (cursor ? '&cursor=' + encodeURIComponent(cursor) : ''), undefined, { signal: ctx.signal });
      for (const a of page.agents) {
        const prev = byId.get(a.id);
        if (prev) prev.partitions.push(...a.partitions); else byId.set(a.id, a);
      }
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    cluster = { agents: [...byId.values()].sort((a, b) => a.id.localeCompare(b.id)), truncated };
  };
  await Promise.all([loadCluster(), sample(ctx.signal)]);
  render();
  ctx.every(2000, async () => { await sample(ctx.signal); render(); });
  ctx.every(10000, async () => { await loadCluster(); render(); });
}

function epochs(parts) {
  if (parts.length === 0) return '–';
  const shown = parts.slice(0, 4).map((p) => `${p.topic}/${p.partition}@${p.epoch}`).join(', ');
  return h('span', { class: 'mono', title: parts.map((p) => `${p.topic}/${p.partition}@${p.epoch}`).join('\n') },
    shown + (parts.length > 4 ? ` … +${parts.length - 4}` : ''));
}

export async function janitorPage(main, ctx) {
  const err = h('p', { id: 'page-error', class: 'error', role: 'alert' });
  const box = h('div');
  put(main, h('h1', null, 'Janitor', h('span', { class: 'sub' }, 'retention, merging, compaction and deletion, by the agents that own the partitions')), err,
    h('section', { class: 'panel' }, box),
    h('p', { class: 'muted' }, 'Figures are per agent, counted since it started, from GET /v1/stats of each agent this tab reached. Behind a load balancer every agent shows up after a few refreshes.'));
  if (!can('describe', 'cluster')) {
    put(box, h('p', { class: 'denied' }, 'Your key may not describe the cluster: the janitor state is hidden.'));
    return;
  }
  const render = () => {
    const rows = [...samples.entries()].map(([id, list]) => ({ id, m: list[list.length - 1].s.metrics, seen: list[list.length - 1].seen }));
    const runs = (m, duty) => byLabel(m, 'silt_janitor_runs_total', 'outcome', { duty });
    const okFail = (m, duty) => {
      const r = runs(m, duty);
      const failed = Object.entries(r).filter(([o]) => o !== 'ok').reduce((n, [, v]) => n + v, 0);
      return h('span', null, num(r.ok || 0), failed ? h('span', { class: 'badge bad', title: 'failed or fenced runs' }, ` ${num(failed)} failed`) : null);
    };
    const deleted = (m) => byLabel(m, 'silt_janitor_objects_deleted_total', 'reason');
    put(box, rows.length === 0 ? h('p', { class: 'muted' }, 'Waiting for the first answer…') : table([
      { label: 'Agent', cell: (r) => h('span', { class: 'mono' }, r.id) },
      { label: 'Leases', num: true, cell: (r) => num(sum(r.m, 'silt_ownership_leases_held')) },
      { label: 'Retention overdue', num: true, cell: (r) => bytes(sum(r.m, 'silt_janitor_retention_overdue_bytes')) },
      { label: 'Retention freed', num: true, cell: (r) => bytes(sum(r.m, 'silt_janitor_retention_freed_bytes_total')) },
      { label: 'Merges', num: true, cell: (r) => okFail(r.m, 'merge') },
      { label: 'Chunks awaiting merge', num: true, cell: (r) => num(sum(r.m, 'silt_janitor_merge_pending_chunks')) },
      { label: 'Compactions', num: true, cell: (r) => okFail(r.m, 'compact') },
      { label: 'Rewritten', num: true, cell: (r) => bytes(sum(r.m, 'silt_janitor_rewritten_bytes_total')) },
      { label: 'GC runs', num: true, cell: (r) => okFail(r.m, 'gc') },
      { label: 'Objects deleted', cell: (r) => Object.entries(deleted(r.m)).map(([k, v]) => `${k} ${num(v)}`).join(', ') || '0' },
      { label: 'Awaiting deletion', num: true, cell: (r) => awaiting(r.m) },
      { label: 'Seen', cell: (r) => duration(Date.now() - r.seen) + ' ago' },
    ], rows));
  };
  await sample(ctx.signal);
  render();
  ctx.every(3000, async () => { await sample(ctx.signal); render(); });
}

function awaiting(m) {
  if (!('silt_janitor_segments_awaiting_deletion' in m)) return '–';
  return `${num(m.silt_janitor_segments_awaiting_deletion)} (${bytes(m.silt_janitor_segments_awaiting_deletion_bytes || 0)})`;
}

