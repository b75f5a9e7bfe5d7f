// The cat-facts page of `keyward demo`. No secret in here: the gateway address and the
// publishable key come from <meta> tags; tokens come from this site's own backend (/bff/token)
// and live only in this script's memory. Text goes in with textContent, never as HTML.
'use strict';

const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || '';
const gateway = meta('kw-gateway');
const publishableKey = meta('kw-publishable-key');
const site = meta('kw-site');
const $ = (id) => document.getElementById(id);

function show(el, text, error) {
  el.textContent = text;
  el.classList.toggle('error', Boolean(error));
}

// GET /fact through the gateway; resolves to the fact or throws with keyward's problem code.
async function fetchFact(headers) {
  const resp = await fetch(`${gateway}/fact`, { headers, mode: 'cors', credentials: 'omit', cache: 'no-store' });
  let body = {};
  try { body = await resp.json(); } catch (_) { /* not JSON */ }
  if (!resp.ok) {
    const err = new Error(`${resp.status} ${body.code || ''}${body.detail ? `: ${body.detail}` : ''}`.trim());
    err.status = resp.status;
    throw err;
  }
  return body.fact;
}

function bump(el) {
  el.textContent = String(Number(el.textContent) + 1);
}

// ---- panel 1: the publishable key -------------------------------------------------------------

function publishablePanel() {
  const btn = $('pk-new');
  document.querySelector('[data-testid="gateway"]').textContent = `${gateway}/fact`;
  document.querySelector('[data-testid="pk-hint"]').textContent = `${publishableKey.slice(0, 16)}…`;
  document.querySelector('[data-testid="origin"]').textContent = window.location.origin;
  async function load() {
    btn.disabled = true;
    show($('pk-status'), 'fetching…');
    try {
      show($('pk-fact'), await fetchFact({ 'x-api-key': publishableKey }));
      bump($('pk-count'));
      show($('pk-status'), '');
    } catch (e) {
      show($('pk-status'), `refused: ${e.message}`, true);
    } finally {
      btn.disabled = false;
    }
  }
  btn.addEventListener('click', load);
  load();
}

// ---- panel 2: a short-lived token from this site's backend -----------------------------------

function bffPanel() {
  const btn = $('bff-new');
  let token = null; // { value, expiresAt, scope }

  async function getToken() {
    if (token && token.expiresAt - Date.now() > 30000) return token;
    const resp = await fetch('/bff/token', { method: 'POST', credentials: 'same-origin', cache: 'no-store' });
    let body = {};
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    if (!resp.ok || !body.access_token) throw new Error(`the site's backend said ${resp.status}${body.error ? `: ${body.error}` : ''}`);
    token = { value: body.access_token, expiresAt: Date.now() + body.expires_in * 1000, scope: body.scope || '' };
    return token;
  }

  function describe() {
    if (!token) return 'no token yet';
    const left = Math.max(0, Math.round((token.expiresAt - Date.now()) / 1000));
    return `token: ${token.scope}, expires in ${left} s`;
  }

  async function load() {
    btn.disabled = true;
    show($('bff-status'), 'fetching…');
    try {
      let t = await getToken();
      let fact;
      try {
        fact = await fetchFact({ authorization: `Bearer ${t.value}` });
      } catch (e) {
        if (e.status !== 401) throw e;
        token = null; // expired or revoked: one new token, one retry
        t = await getToken();
        fact = await fetchFact({ authorization: `Bearer ${t.value}` });
      }
      show($('bff-fact'), fact);
      bump($('bff-count'));
      show($('bff-status'), '');
    } catch (e) {
      show($('bff-status'), `refused: ${e.message}`, true);
    } finally {
      $('bff-token').textContent = describe();
      btn.disabled = false;
    }
  }
  btn.addEventListener('click', load);
  setInterval(() => { $('bff-token').textContent = describe(); }, 1000);
}

// ---- the foreign page: the same publishable key from another origin --------------------------

function foreignPage() {
  async function attempt() {
    bump($('foreign-count'));
    show($('foreign-result'), 'trying…');
    show($('foreign-bff'), 'trying…');
    try {
      const fact = await fetchFact({ 'x-api-key': publishableKey });
      show($('foreign-result'), `NOT refused (this is a bug): ${fact}`, true);
    } catch (e) {
      // A CORS refusal reaches scripts only as a TypeError without details.
      show($('foreign-result'), `refused: ${e instanceof TypeError ? `the browser blocked it (CORS): ${e.message}` : e.message}`);
    }
    try {
      const resp = await fetch(`${site}/bff/token`, { method: 'POST', credentials: 'include', cache: 'no-store' });
      show($('foreign-bff'), `NOT refused (this is a bug): ${resp.status}`, true);
    } catch (e) {
      show($('foreign-bff'), `refused: ${e instanceof TypeError ? `the browser blocked it (CORS): ${e.message}` : e.message}`);
    }
  }
  $('foreign-try').addEventListener('click', attempt);
  attempt();
}

if (document.body.dataset.role === 'foreign') {
  foreignPage();
} else {
  publishablePanel();
  bffPanel();
}
