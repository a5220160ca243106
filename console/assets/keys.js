// Keys and ACLs (admin keys only): list, create (the key is shown once),
// revoke, and the audit log.
import { put, h, field, api, isAdmin, denied, enc, time, toast, confirmDialog, table } from './lib.js';

export async function keysPage(main, ctx) {
  const err = h('p', { id: 'page-error', class: 'error', role: 'alert' });
  put(main, h('h1', null, 'Keys and ACLs'), err);
  if (!isAdmin()) {
    const btn = h('button', { type: 'button' }, 'Create a key');
    main.append(h('section', { class: 'panel' }, btn, ' ', denied(btn, 'Keys, ACLs and the audit log need an admin key; yours is not one.')));
    return;
  }
  const listBox = h('div');
  const auditBox = h('div');
  const created = h('div', { id: 'key-created', 'aria-live': 'polite' });
  main.append(createForm(created, () => loadKeys()), created,
    h('section', { class: 'panel', 'aria-labelledby': 'h-keys' }, h('h2', { id: 'h-keys' }, 'Keys'), listBox),
    h('section', { class: 'panel', 'aria-labelledby': 'h-audit' }, h('h2', { id: 'h-audit' }, 'Audit log'), auditBox));

  let showRevoked = false;
  const loadKeys = async () => {
    const { keys } = await api('GET', '/v1/keys', undefined, { signal: ctx.signal });
    const toggle = h('label', { class: 'check' }, h('input', { type: 'checkbox', checked: showRevoked, onchange: (e) => { showRevoked = e.target.checked; loadKeys(); } }), 'Show revoked keys');
    const rows = keys.filter((k) => showRevoked || !k.revoked_at);
    put(listBox, toggle, table([
      { label: 'Id', cell: (k) => h('span', { class: 'mono' }, k.id) },
      { label: 'Name', cell: (k) => k.name },
      { label: 'Access', cell: (k) => (k.admin ? h('span', { class: 'badge' }, 'admin') : h('span', { class: 'mono' }, (k.acls || []).map(aclText).join('; ') || 'nothing')) },
      { label: 'Created', cell: (k) => time(k.created_at) },
      { label: 'Last used', cell: (k) => (k.last_used_at ? time(k.last_used_at) : 'never') },
      { label: 'Expires', cell: (k) => (k.expires_at ? time(k.expires_at) : 'never') },
      { label: 'State', cell: (k) => (k.revoked_at ? h('span', { class: 'badge bad' }, 'revoked') : h('span', { class: 'badge ok' }, 'live')) },
      { label: 'Actions', cell: (k) => (k.revoked_at ? '' : revokeButton(k, loadKeys)) },
    ], rows));
  };

  let before = 0;
  const auditRows = [];
  const loadAudit = async (more) => {
    const q = `/v1/audit?limit=50${more && before ? '&before=' + before : ''}`;
    const { entries } = await api('GET', q, undefined, { signal: ctx.signal });
    if (!more) auditRows.length = 0;
    auditRows.push(...entries);
    if (entries.length) before = entries[entries.length - 1].id;
    const older = h('button', { type: 'button', onclick: () => loadAudit(true).catch((e) => toast(e.message, true)), disabled: entries.length < 50 }, 'Older entries');
    put(auditBox, table([
      { label: 'When', cell: (e) => time(e.at) },
      { label: 'Who', cell: (e) => e.key_name + (e.key_id ? ` (${e.key_id})` : '') },
      { label: 'Action', cell: (e) => h('span', { class: 'mono' }, e.action) },
      { label: 'Resource', cell: (e) => `${e.resource_type} ${e.resource_name}` },
      { label: 'From', cell: (e) => e.source + (e.forwarded_for ? ` via ${e.forwarded_for}` : '') },
      { label: 'Agent', cell: (e) => h('span', { class: 'mono' }, e.agent_id) },
      { label: 'Details', cell: (e) => h('span', { class: 'mono' }, e.details ? JSON.stringify(e.details) : '') },
    ], auditRows), h('div', { class: 'pager' }, older));
  };
  await Promise.all([loadKeys(), loadAudit(false)]);
}

function aclText(a) {
  const name = a.resource_type === 'cluster' ? '' : ':' + a.name + (a.pattern_type === 'prefix' ? '*' : '');
  return `${(a.operations || []).join(',')}:${a.resource_type}${name}`;
}

function revokeButton(k, reload) {
  const b = h('button', { type: 'button', class: 'danger', 'aria-label': `Revoke key ${k.name}` }, 'Revoke');
  b.onclick = async () => {
    const ok = await confirmDialog({ title: `Revoke key ${k.name}?`, word: k.name, ok: 'Revoke',
      body: ['Every agent refuses it within seconds and ends its open streams. A revoked key stays revoked.'] });
    if (!ok) return;
    try { await api('DELETE', `/v1/keys/${enc(k.id)}`); toast(`Key ${k.name} revoked`); await reload(); } catch (e) { toast(e.message, true); }
  };
  return b;
}

function createForm(out, reload) {
  const name = h('input', { required: true, autocomplete: 'off', spellcheck: 'false' });
  const admin = h('input', { type: 'checkbox' });
  const allow = h('textarea', { rows: '3', spellcheck: 'false', placeholder: 'produce:topic:orders\nconsume,describe:topic:logs-*\ndescribe:cluster' });
  const expires = h('input', { type: 'number', min: '1', placeholder: 'never' });
  admin.onchange = () => { allow.disabled = admin.checked; };
  const form = h('form', null,
    h('div', { class: 'inline' }, field('Name', name, 'grow'), field('Expires in (hours)', expires),
      h('label', { class: 'check' }, admin, 'Admin key (may do everything)')),
    field('ACL entries, one OPERATIONS:TYPE:PATTERN per line (a trailing * is a prefix)', allow),
    h('div', { class: 'pager' }, h('button', { type: 'submit', class: 'primary' }, 'Create key')));
  form.onsubmit = async (e) => {
    e.preventDefault();
    const body = { name: name.value.trim() };
    if (admin.checked) body.admin = true;
    else body.allow = allow.value.split('\n').map((l) => l.trim()).filter(Boolean);
    if (expires.value) body.expires_at = new Date(Date.now() + Number(expires.value) * 3600 * 1000).toISOString();
    try {
      const r = await api('POST', '/v1/keys', body);
      const copy = h('button', { type: 'button', onclick: () => navigator.clipboard.writeText(r.token).then(() => toast('Copied'), () => toast('Copy it by hand', true)) }, 'Copy');
      put(out, h('section', { class: 'panel', role: 'alert' }, h('h2', null, `Key ${r.key.name} created`),
        h('p', null, 'This is the only time the key is shown. Store it now.'), h('div', { class: 'secret', id: 'new-key' }, r.token),
        h('div', { class: 'pager' }, copy, h('button', { type: 'button', onclick: () => put(out) }, 'I stored it'))));
      form.reset();
      allow.disabled = false;
      await reload();
    } catch (ex) { toast(ex.message, true); }
  };
  return h('section', { class: 'panel', 'aria-labelledby': 'h-newkey' }, h('h2', { id: 'h-newkey' }, 'Create a key'), form);
}
