// Consumer groups: the list, and a group's members, offsets, lag chart,
// offset reset and deletion.
import { put, h, field, api, pages, can, denied, enc, num, time, duration, toast, confirmDialog, table, pager, drawChart } from './lib.js';

const PAGE = 50;
const HOUR = 3600 * 1000;

export async function groupsPage(main, ctx) {
  const err = h('p', { id: 'page-error', class: 'error', role: 'alert' });
  const box = h('div');
  put(main, h('h1', null, 'Consumer groups', h('span', { class: 'sub' }, 'who is behind')), err, h('section', { class: 'panel' }, box));
  const { items, truncated } = await pages('/v1/groups', 'groups', { signal: ctx.signal });
  let page = 0, filter = '';
  const input = h('input', { type: 'search', placeholder: 'name contains…' });
  const tableBox = h('div');
  const render = () => {
    const shown = items.filter((g) => g.name.includes(filter));
    page = Math.min(page, Math.max(0, Math.ceil(shown.length / PAGE) - 1));
    put(tableBox, shown.length === 0 ? h('p', { class: 'muted' }, 'No groups your key may describe.') : table([
      { label: 'Group', cell: (g) => h('a', { href: '#/groups/' + enc(g.name) }, g.name) },
      { label: 'State', cell: (g) => h('span', { class: 'badge' + (g.state === 'stable' ? ' ok' : g.state === 'rebalancing' ? ' warn' : '') }, g.state) },
      { label: 'Generation', num: true, cell: (g) => num(g.generation) },
      { label: 'Members', num: true, cell: (g) => num(g.members) },
    ], shown.slice(page * PAGE, (page + 1) * PAGE)), pager(shown.length, page, PAGE, (p) => { page = p; render(); }, 'groups'),
    truncated ? h('p', { class: 'muted' }, 'Only the first 100,000 groups are listed.') : null);
  };
  input.addEventListener('input', () => { filter = input.value.trim(); page = 0; render(); });
  put(box, h('div', { class: 'inline' }, field('Filter groups', input)), tableBox);
  render();
}

export async function groupPage(main, ctx, name) {
  const err = h('p', { id: 'page-error', class: 'error', role: 'alert' });
  const membersBox = h('div');
  const offsetsBox = h('div');
  const totalEl = h('span', { class: 'sub', id: 'group-total-lag' });
  const chart = h('canvas', { class: 'chart', id: 'lag-chart', role: 'img', 'aria-label': 'total lag' });
  const resetBox = h('div');
  const actions = h('div', { class: 'pager' });
  put(main, 
    h('h1', null, h('a', { href: '#/groups' }, 'Groups'), ' / ', h('span', { class: 'mono' }, name), totalEl),
    err,
    h('section', { class: 'panel', 'aria-labelledby': 'h-lag' }, h('h2', { id: 'h-lag' }, 'Lag of the committed partitions, up to the last hour'), chart,
      h('p', { class: 'muted' }, 'Sampled every 30 s by the agent (kept for an hour in its memory) and every 5 s by this tab while it is open.')),
    h('section', { class: 'panel', 'aria-labelledby': 'h-offsets' }, h('h2', { id: 'h-offsets' }, 'Committed offsets and lag'), offsetsBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-members' }, h('h2', { id: 'h-members' }, 'Members and assignment'), membersBox, actions),
    h('section', { class: 'panel', 'aria-labelledby': 'h-reset' }, h('h2', { id: 'h-reset' }, 'Reset offsets'), resetBox));

  let group = null, offsets = [];
  const series = []; // {t, v}: the agent's history, then this tab's samples
  const load = async () => {
    [group, offsets] = await Promise.all([
      api('GET', `/v1/groups/${enc(name)}`, undefined, { signal: ctx.signal }),
      api('GET', `/v1/groups/${enc(name)}/offsets`, undefined, { signal: ctx.signal }).then((r) => r.offsets),
    ]);
    // As the agent's history (and silt_group_lag_records): the partitions
    // with a committed offset.
    series.push({ t: Date.now(), v: offsets.filter((o) => o.committed_offset !== null).reduce((n, o) => n + o.lag, 0) });
    while (series.length && series[0].t < Date.now() - HOUR) series.shift();
  };
  const history = await api('GET', `/v1/groups/${enc(name)}/lag-history`, undefined, { signal: ctx.signal });
  series.push(...history.points.map((p) => ({ t: p.at, v: p.lag })));
  await load();
  let resetBuilt = false;
  const render = () => {
    const total = offsets.reduce((n, o) => n + o.lag, 0);
    totalEl.textContent = `${group.state} · generation ${group.generation} · total lag ${num(total)}`;
    // The chart spans the samples there are: 5 minutes at least, an hour at most.
    const now = Date.now();
    const from = Math.max(now - HOUR, Math.min(series.length ? series[0].t : now, now - 5 * 60 * 1000));
    drawChart(chart, series, { from, to: now, label: 'total lag' });
    put(offsetsBox, offsets.length === 0 ? h('p', { class: 'muted' }, 'No committed offsets and no subscriptions.') : table([
      { label: 'Topic', cell: (o) => h('a', { href: '#/topics/' + enc(o.topic) }, o.topic) },
      { label: 'Partition', num: true, cell: (o) => o.partition },
      { label: 'Committed', num: true, cell: (o) => (o.committed_offset === null ? '–' : num(o.committed_offset)) },
      { label: 'Log start', num: true, cell: (o) => num(o.log_start_offset) },
      { label: 'High watermark', num: true, cell: (o) => num(o.high_watermark) },
      { label: 'Lag', num: true, cell: (o) => h('strong', null, num(o.lag)) },
      { label: 'Owner', cell: (o) => owner(group, o) },
      { label: 'Committed at', cell: (o) => (o.committed_at ? time(o.committed_at) : '–') },
    ], offsets));
    put(membersBox, group.members.length === 0 ? h('p', { class: 'muted' }, 'No live members: the group is empty.') : table([
      { label: 'Member', cell: (m) => h('span', { class: 'mono', title: 'member ids authorize commits: only their start is shown' }, m.member_id.slice(0, 8) + '…') },
      { label: 'Topics', cell: (m) => m.topics.join(', ') },
      { label: 'Assignment', cell: (m) => m.assignments.map((a) => `${a.topic}/${a.partition}`).join(', ') || '–' },
      { label: 'Generation', num: true, cell: (m) => m.generation },
      { label: 'Joined', cell: (m) => time(m.joined_at) },
      { label: 'Last heard', cell: (m) => duration(Date.now() - Date.parse(m.last_heartbeat)) + ' ago' },
    ], group.members));
    const del = h('button', { type: 'button', class: 'danger' }, 'Delete group');
    let why = null;
    if (!can('delete', 'group', name)) why = denied(del, 'Your key may not delete this group.');
    else if (group.members.length > 0) why = denied(del, 'A group with live members cannot be deleted.');
    del.onclick = async () => {
      if (!await confirmDialog({ title: `Delete group ${name}?`, word: name, ok: 'Delete group', body: ['Its committed offsets go with it.'] })) return;
      try { await api('DELETE', `/v1/groups/${enc(name)}`); toast(`Group ${name} deleted`); location.hash = '#/groups'; } catch (e) { toast(e.message, true); }
    };
    put(actions, del, why);
    if (!resetBuilt) { put(resetBox, resetForm(name, () => group, () => offsets, async () => { await load(); render(); })); resetBuilt = true; } else resetBox.firstChild.refresh();
  };
  render();
  ctx.every(5000, async () => { await load(); render(); });
}

function owner(group, o) {
  const m = group.members.find((x) => x.assignments.some((a) => a.topic === o.topic && a.partition === o.partition));
  return m ? h('span', { class: 'mono' }, m.member_id.slice(0, 8) + '…') : '–';
}

function resetForm(name, getGroup, getOffsets, reload) {
  const topics = [...new Set(getOffsets().map((o) => o.topic))];
  const topic = h('select', { id: 'reset-topic' }, topics.map((t) => h('option', { value: t }, t)));
  const part = h('input', { id: 'reset-partition', placeholder: 'all', inputmode: 'numeric' });
  const to = h('select', { id: 'reset-to' }, [['earliest', 'earliest'], ['latest', 'latest'], ['time', 'a time'], ['offset', 'an offset']].map(([v, l]) => h('option', { value: v }, l)));
  const at = h('input', { id: 'reset-at', placeholder: 'offset, or a date and time' });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Preview and reset');
  const form = h('form', { class: 'inline' }, field('Topic', topic), field('Partition', part), field('To', to), field('Offset or time', at), submit);
  const notes = h('div');
  const refreshAllowed = () => {
    const g = getGroup();
    put(notes);
    submit.disabled = false;
    if (topics.length === 0) notes.append(denied(submit, 'The group has no offsets to reset.'));
    else if (!can('consume', 'group', name) || !can('consume', 'topic', topic.value)) notes.append(denied(submit, 'Your key may not commit offsets for this group and topic.'));
    else if (g.members.length > 0) notes.append(denied(submit, 'Offsets can be reset only on an empty group: stop its consumers first.'));
  };
  topic.onchange = refreshAllowed;
  refreshAllowed();
  form.onsubmit = async (e) => {
    e.preventDefault();
    const rows = getOffsets().filter((o) => o.topic === topic.value && (part.value === '' || o.partition === Number(part.value)));
    if (rows.length === 0) { toast('No such partition', true); return; }
    const changes = [];
    try {
      for (const o of rows) {
        let n;
        switch (to.value) {
          case 'earliest': n = o.log_start_offset; break;
          case 'latest': n = o.high_watermark; break;
          case 'offset': n = Math.min(Math.max(Number(at.value), o.log_start_offset), o.high_watermark); break;
          case 'time': {
            const t = Date.parse(at.value);
            if (Number.isNaN(t)) throw new Error('Give a date and time, such as 2026-01-31T12:00:00');
            const r = await api('GET', `/v1/topics/${enc(o.topic)}/partitions/${o.partition}/offsets?timestamp=${t}`);
            n = r.offset === null ? o.high_watermark : r.offset;
            break;
          }
        }
        if (!Number.isInteger(n)) throw new Error('Give an offset: a whole number');
        changes.push({ o, n });
      }
    } catch (ex) { toast(ex.message, true); return; }
    const ok = await confirmDialog({ title: `Reset offsets of ${name}?`, ok: 'Reset offsets',
      body: [h('ul', null, changes.map(({ o, n }) => h('li', null, `${o.topic}/${o.partition}: ${o.committed_offset ?? 'none'} → ${n}`))),
        'Consumers of the group will start from these offsets.'] });
    if (!ok) return;
    try {
      await api('POST', `/v1/groups/${enc(name)}/offsets`, { offsets: changes.map(({ o, n }) => ({ topic: o.topic, partition: o.partition, offset: n })) });
      toast('Offsets reset');
      await reload();
    } catch (ex) { toast(ex.message, true); }
  };
  const el = h('div', null, form, notes);
  el.refresh = refreshAllowed;
  return el;
}
