// keyward console: vanilla JS, no dependencies. Builds the DOM with textContent only (never
// innerHTML with data), talks to the admin API of the same origin with the token kept in
// sessionStorage. A new key's plaintext lives only in the dialog that shows it, and is
// removed from the page when the dialog closes.
'use strict';

const TOKEN = 'keyward.admin_token';
const $ = (sel) => document.querySelector(sel);
const SVG = 'http://www.w3.org/2000/svg';
const COLORS = ['#2f5bd3', '#b42318', '#dc6803', '#067647', '#7a5af8', '#0e9384', '#c11574', '#475467'];

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'onclick') e.addEventListener('click', v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function status(msg, kind) {
  const s = $('#status');
  s.textContent = msg || '';
  s.className = kind || '';
}

class ApiError extends Error {}

// The signed-in caller, from `GET /v1/session`: `{role, actor, can_write, …}`; null when
// signed out. Only what the token's role allows is offered (the server enforces it anyway).
let session = null;
const canWrite = () => Boolean(session && session.can_write);

async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN);
  if (!token) {
    // Nothing is sent without a token (and nothing is called "refused" that was never given).
    status('Sign in first.', 'error');
    throw new ApiError('signed out');
  }
  const init = { method, headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => null);
  if (resp.status === 401) {
    signOut('The token was refused: sign in again.');
    throw new ApiError('unauthorized');
  }
  if (!resp.ok) {
    const msg = data && (data.detail || data.title) ? `${data.title}: ${data.detail || ''}` : `HTTP ${resp.status}`;
    status(msg, 'error');
    throw new ApiError(msg);
  }
  return data;
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) p.set(k, v);
  const s = p.toString();
  return s ? '?' + s : '';
}

function formValues(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = String(v).trim();
  return out;
}

// `2026-12-04T12:29:49.123Z` → `2026-12-04 12:29Z`.
const short = (t) => (t ? t.replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, 'Z') : '');
// The same for a table cell: it may break between the date and the time, nowhere else.
function when(t, none) {
  if (!t) return none || '';
  const [d, h] = short(t).split(' ');
  return el('span', {}, el('span', { class: 'nw' }, d), ' ', el('span', { class: 'nw' }, h));
}

// ---- sign in / views ----------------------------------------------------------------------

function signOut(msg) {
  sessionStorage.removeItem(TOKEN);
  session = null;
  $('#nav').hidden = true;
  $('#whoami').hidden = true;
  document.querySelectorAll('.write-only').forEach((e) => (e.hidden = true));
  // Nothing of the last session stays in the page (rows, chart), nor its buttons.
  document.querySelectorAll('.view tbody, #usage-chart').forEach((e) => e.replaceChildren());
  document.querySelectorAll('.view').forEach((v) => (v.hidden = true));
  $('#signin').hidden = false;
  status(msg || '', msg ? 'error' : '');
}

async function signIn(token) {
  if (!token) return;
  sessionStorage.setItem(TOKEN, token);
  let s;
  try {
    s = await api('GET', '/v1/session');
  } catch (e) {
    return;
  }
  session = s;
  $('#signin').hidden = true;
  $('#nav').hidden = false;
  document.querySelectorAll('.write-only').forEach((e) => (e.hidden = !canWrite()));
  const who = $('#whoami');
  const rights = { admin: 'every right', write: 'read and write' }[s.role] || 'read-only';
  who.textContent = `${s.actor} (${s.can_write ? rights : 'read-only'})`;
  who.dataset.role = s.role;
  who.hidden = false;
  status(s.can_write ? 'Signed in.' : 'Signed in with a read-only token: nothing can be changed here.', 'info');
  show('apps');
}

const loaders = {};

function show(view) {
  if (!session) return;
  document.querySelectorAll('.view').forEach((v) => (v.hidden = v.id !== 'view-' + view));
  document.querySelectorAll('#nav button[data-view]').forEach((b) => b.classList.toggle('active', b.dataset.view === view));
  if (loaders[view]) loaders[view]();
}

// A paginated table: `fetchPage(cursor)` returns the API page, `row(item)` a <tr>.
function pager(bodySel, moreSel, fetchPage, row) {
  let cursor = null;
  const more = $(moreSel);
  async function load(reset) {
    if (reset) {
      cursor = null;
      $(bodySel).replaceChildren();
    }
    const page = await fetchPage(cursor);
    for (const item of page.items) $(bodySel).append(row(item));
    cursor = page.next_cursor || page.next_before || null;
    more.hidden = !cursor;
  }
  more.addEventListener('click', () => load(false).catch(() => {}));
  return load;
}

// ---- apps --------------------------------------------------------------------------------

const loadApps = pager('#apps-body', '#apps-more', (cursor) => {
  const { q } = formValues($('#app-search'));
  return api('GET', '/v1/apps' + qs({ q, cursor }));
}, (a) => el('tr', { 'data-app': a.name },
  el('td', {}, a.name), el('td', {}, el('code', {}, a.id)), el('td', {}, when(a.created_at)),
  el('td', { class: 'actions' },
    el('button', { onclick: () => { $('#key-search').app.value = a.name; show('keys'); } }, 'Keys'),
    el('button', { onclick: () => { usageFor({ app: a.name }); } }, 'Usage'),
    ...(canWrite() ? [
      el('button', { 'data-testid': 'app-disable', onclick: () => switchApp(a, 'disable') }, 'Disable'),
      el('button', { 'data-testid': 'app-enable', onclick: () => switchApp(a, 'enable') }, 'Enable')] : []))));
loaders.apps = () => loadApps(true).catch(() => {});

// Disables (or enables) every current key and client of an app.
async function switchApp(a, what) {
  try {
    const r = await api('POST', `/v1/apps/${encodeURIComponent(a.id)}/${what}`);
    status(`${a.name}: ${r.keys.length} key(s) and ${r.clients.length} client(s) ${what}d.`, 'info');
  } catch (e) { /* shown */ }
}

// ---- keys --------------------------------------------------------------------------------

const loadKeys = pager('#keys-body', '#keys-more', (cursor) => {
  const f = formValues($('#key-search'));
  return api('GET', '/v1/keys' + qs({ ...f, cursor }));
}, keyRow);
loaders.keys = () => loadKeys(true).catch(() => {});

function keyRow(k) {
  const actions = el('td', { class: 'actions' });
  const act = async (label, fn) => {
    try {
      await fn();
      status(label, 'info');
      loaders.keys();
    } catch (e) { /* shown by api() */ }
  };
  // What the server would refuse is not offered: nothing that changes a key to a read-only
  // token; no rotation of a key already rotated (its successor is rotated instead), of a
  // canary or of an expired key.
  if (canWrite() && k.state !== 'revoked') {
    if (!k.rotated_to && !k.canary && k.state !== 'expired') {
      actions.append(el('button', { 'data-testid': 'rotate', onclick: () => rotate(k) }, 'Rotate'));
    }
    actions.append(
      k.state === 'disabled'
        ? el('button', { 'data-testid': 'enable', onclick: () => act('Key enabled.', () => api('POST', `/v1/keys/${k.id}/enable`)) }, 'Enable')
        : el('button', { 'data-testid': 'disable', onclick: () => act('Key disabled.', () => api('POST', `/v1/keys/${k.id}/disable`)) }, 'Disable'));
    const revoke = el('button', { class: 'danger', 'data-testid': 'revoke' }, 'Revoke');
    revoke.addEventListener('click', () => {
      if (revoke.dataset.armed) {
        act('Key revoked.', () => api('POST', `/v1/keys/${k.id}/revoke`, { reason: 'revoked from the console' }));
      } else {
        revoke.dataset.armed = '1';
        revoke.textContent = 'Confirm revoke';
        revoke.setAttribute('data-testid', 'revoke-confirm');
      }
    });
    actions.append(revoke);
  }
  actions.append(el('button', { 'data-testid': 'usage', onclick: () => usageFor({ key: k.id }) }, 'Usage'));
  const state = el('td', { class: 'state-' + k.state, 'data-testid': 'state-cell' },
    el('span', { 'data-testid': 'state' }, k.state));
  if (k.rotated_to) {
    state.append(el('span', { class: 'note', 'data-testid': 'rotated', title: `replaced by ${k.rotated_to}` },
      'rotated ', when(k.rotated_at)));
  }
  if (k.rotated_from) {
    state.append(el('span', { class: 'note', title: `replaces ${k.rotated_from}` }, 'successor'));
  }
  return el('tr', { 'data-key': k.id, 'data-name': k.name || '' },
    el('td', {}, k.name || ''), el('td', {}, el('code', { class: 'hint', 'data-testid': 'hint' }, k.hint)),
    el('td', {}, k.app_name), el('td', {}, k.env),
    el('td', { 'data-testid': 'kind' }, ...kindTags(k).map((t) => el('span', { class: 'tag ' + t.replace(/\W+/g, '-') }, t))),
    el('td', { 'data-testid': 'scopes' }, ...(k.scopes || []).map((sc) => el('span', { class: 'tag' }, sc))),
    state, el('td', {}, when(k.expires_at, 'never')),
    el('td', { 'data-testid': 'last-used' }, when(k.last_used_at, 'never')), actions);
}

// `secret` or `publishable`, and what else sets the key apart.
function kindTags(k) {
  const tags = [k.kind || 'secret'];
  if (k.canary) tags.push('canary');
  if (k.legacy) tags.push('legacy import');
  if (k.exchange_only) tags.push('exchange-only');
  return tags;
}

function showSecret(key) {
  $('#secret-value').textContent = key;
  $('#secret-dialog').showModal();
}

function rotate(k) {
  const d = $('#rotate-dialog');
  d.returnValue = '';
  d.showModal();
  d.addEventListener('close', async () => {
    if (d.returnValue !== 'ok') return;
    const grace = $('#rotate-form').grace.value.trim();
    try {
      const r = await api('POST', `/v1/keys/${k.id}/rotate`, grace ? { grace } : {});
      showSecret(r.key);
      status(`Rotated: the old key works until ${short(r.previous.expires_at)}.`, 'info');
      loaders.keys();
    } catch (e) { /* shown */ }
  }, { once: true });
}

// ---- clients -----------------------------------------------------------------------------

const loadClients = pager('#clients-body', '#clients-more', (cursor) => {
  const f = formValues($('#client-search'));
  return api('GET', '/v1/clients' + qs({ ...f, cursor }));
}, (c) => el('tr', {},
  el('td', {}, el('code', {}, c.client_id)), el('td', {}, c.name || ''), el('td', {}, c.app_name),
  el('td', {}, c.auth_method), el('td', { class: 'state-' + c.state }, c.state), el('td', {}, when(c.created_at))));
loaders.clients = () => loadClients(true).catch(() => {});

// ---- usage -------------------------------------------------------------------------------

function usageFor(params) {
  const f = $('#usage-form');
  f.key.value = params.key || '';
  f.app.value = params.app || '';
  show('usage');
}

loaders.usage = async () => {
  const f = formValues($('#usage-form'));
  if (!f.key && !f.app) {
    $('#usage-chart').replaceChildren(el('p', {}, 'Choose a key or an app.'));
    $('#usage-totals').replaceChildren();
    return;
  }
  let u;
  try {
    u = await api('GET', '/v1/usage' + qs(f));
  } catch (e) { return; }
  $('#usage-totals').replaceChildren(...Object.entries(u.totals).map(([o, n]) => el('tr', {}, el('td', {}, o), el('td', {}, n))));
  $('#usage-chart').replaceChildren(chart(u));
};

// The API lists only buckets with requests. The chart needs every bucket of the period, from
// the start of the period (`since`) to now (or the newest bucket, if the server's clock is
// ahead), with 0 where there were no requests: a line must drop to 0 over a quiet minute,
// never run straight from one busy minute to the next. Filled here, in the browser (the API's
// `series` stays sparse). At most MAX_BUCKETS buckets, the most recent ones.
const MAX_BUCKETS = 7 * 24 * 60;

// RFC 3339 to milliseconds (fractions of a second dropped: the buckets are whole minutes).
const parseT = (t) => Date.parse(String(t).replace(/\.\d+/, ''));

function denseSeries(u, now) {
  const step = (u.bucket === 'hour' ? 3600 : 60) * 1000;
  const floor = (t) => Math.floor(t / step) * step;
  const points = u.series.map((p) => ({ t: parseT(p.start), counts: p.counts }));
  const last = floor(points.reduce((m, p) => Math.max(m, p.t), now));
  let first = floor(parseT(u.since));
  if (!Number.isFinite(first) || first > last) first = points.reduce((m, p) => Math.min(m, p.t), last);
  const clipped = (last - first) / step >= MAX_BUCKETS;
  if (clipped) first = last - (MAX_BUCKETS - 1) * step;
  const byT = new Map(points.map((p) => [p.t, p.counts]));
  const buckets = [];
  for (let t = first; t <= last; t += step) buckets.push({ t, counts: byT.get(t) || {} });
  return { step, buckets, clipped };
}

// Requests by outcome over time: one line per outcome, inline SVG.
function chart(u) {
  const W = 760, H = 220, L = 44, B = 24, T = 10, R = 10;
  const outcomes = Object.keys(u.totals);
  const wrap = el('figure', {});
  if (!u.series.length) {
    wrap.append(el('p', {}, 'No requests in this period.'));
    return wrap;
  }
  const { step, buckets, clipped } = denseSeries(u, Date.now());
  const t0 = buckets[0].t;
  const t1 = Math.max(buckets[buckets.length - 1].t, t0 + step);
  const max = u.series.reduce((m, p) => Object.values(p.counts).reduce((a, n) => Math.max(a, n), m), 1);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (n) => T + (1 - n / max) * (H - T - B);
  const s = svg('svg', {
    viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img', 'data-testid': 'chart-svg',
    'data-baseline': H - B, 'data-buckets': buckets.length, 'data-step': step / 1000,
  });
  s.append(svg('line', { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#d9dee7' }));
  s.append(svg('line', { x1: L, y1: T, x2: L, y2: H - B, stroke: '#d9dee7' }));
  const label = (txt, ax, ay, anchor) => {
    const t = svg('text', { x: ax, y: ay, 'text-anchor': anchor || 'start' });
    t.textContent = txt;
    return t;
  };
  const iso = (t) => new Date(t).toISOString();
  s.append(label(String(max), L - 4, T + 8, 'end'), label('0', L - 4, H - B, 'end'));
  s.append(label(short(iso(t0)), L, H - 6), label(short(iso(buckets[buckets.length - 1].t)), W - R, H - 6, 'end'));
  outcomes.forEach((o, i) => {
    const values = buckets.map((b) => b.counts[o] || 0);
    const pts = buckets.map((b, j) => `${x(b.t).toFixed(1)},${y(values[j]).toFixed(1)}`);
    const color = COLORS[i % COLORS.length];
    s.append(svg('polyline', {
      points: pts.join(' '), fill: 'none', stroke: color, 'stroke-width': 2, 'stroke-linejoin': 'round',
      'data-outcome': o, 'data-values': values.join(','),
    }));
    // A dot on each bucket with requests, so that a single busy minute in a day shows.
    buckets.forEach((b, j) => {
      if (values[j] > 0) s.append(svg('circle', { cx: x(b.t).toFixed(1), cy: y(values[j]).toFixed(1), r: 2.5, fill: color }));
    });
  });
  const legend = el('figcaption', { class: 'legend' });
  outcomes.forEach((o, i) => {
    const sw = svg('svg', { width: 12, height: 12 });
    sw.append(svg('rect', { width: 12, height: 12, fill: COLORS[i % COLORS.length] }));
    legend.append(el('span', {}, sw, ' ' + o));
  });
  const bucket = u.bucket === 'hour' ? 'hour' : 'minute';
  legend.append(el('span', { class: 'muted' }, `per ${bucket}; 0 where there were no requests`
    + (clipped ? ` (the last ${MAX_BUCKETS} ${bucket}s only; the totals cover the whole period)` : '')));
  wrap.append(s, legend);
  return wrap;
}

// ---- audit -------------------------------------------------------------------------------

const loadAudit = pager('#audit-body', '#audit-more', (cursor) => {
  const f = formValues($('#audit-form'));
  return api('GET', '/v1/audit' + qs({ ...f, limit: '50', cursor }));
}, (e) => el('tr', {},
  el('td', {}, e.seq), el('td', {}, when(e.at)), el('td', {}, e.actor), el('td', { 'data-testid': 'audit-kind-cell' }, e.kind),
  el('td', {}, e.severity), el('td', {}, el('code', { class: 'id' }, e.target || '')),
  el('td', { class: 'nowrap', 'data-testid': 'audit-source' }, e.source_ip || '')));
loaders.audit = () => loadAudit(true).catch(() => {});

// ---- wiring ------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('#signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('#token').value.trim();
    $('#token').value = '';
    signIn(t);
  });
  $('#signout').addEventListener('click', () => signOut());
  document.querySelectorAll('#nav button[data-view]').forEach((b) => b.addEventListener('click', () => show(b.dataset.view)));
  for (const [form, view] of [['#app-search', 'apps'], ['#key-search', 'keys'], ['#client-search', 'clients'], ['#usage-form', 'usage'], ['#audit-form', 'audit']]) {
    $(form).addEventListener('submit', (ev) => { ev.preventDefault(); loaders[view](); });
  }
  $('#app-create').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const { name } = formValues(ev.target);
    try {
      await api('POST', '/v1/apps', { name });
      ev.target.reset();
      status(`App ${name} created.`, 'info');
      loaders.apps();
    } catch (e) { /* shown */ }
  });
  $('#key-create').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = formValues(ev.target);
    const body = { app: f.app, env: f.env };
    if (f.name) body.name = f.name;
    if (f.scopes) body.scopes = f.scopes.split(/[\s,]+/).filter(Boolean);
    if (f.expires_in) body.expires_in = f.expires_in;
    try {
      const k = await api('POST', '/v1/keys', body);
      ev.target.reset();
      showSecret(k.key);
      status(`Key ${k.hint} created.`, 'info');
      loaders.keys();
    } catch (e) { /* shown */ }
  });
  $('#secret-copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('#secret-value').textContent);
      status('Copied to the clipboard.', 'info');
    } catch (e) {
      const r = document.createRange();
      r.selectNodeContents($('#secret-value'));
      getSelection().removeAllRanges();
      getSelection().addRange(r);
      status('Select and copy it by hand.', 'error');
    }
  });
  $('#secret-done').addEventListener('click', () => $('#secret-dialog').close());
  // Once closed, the plaintext is gone from the page for good.
  $('#secret-dialog').addEventListener('close', () => { $('#secret-value').textContent = ''; });
  if (sessionStorage.getItem(TOKEN)) signIn(sessionStorage.getItem(TOKEN));
});
