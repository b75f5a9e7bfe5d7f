// End-to-end test of keyward's web console in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core). Usage: node run.mjs <admin-url> <admin-token> [screenshot-dir]
// Exit 0 when every step passed; screenshots of each step go to the directory.
// Optional environment (set by it::console::chromium_end_to_end): USAGE_APP (an app with
// traffic), USAGE_EXPECT (its allowed requests per minute, from the first busy minute to the
// last: "6,0,0,2"), USED_KEY (a key of USAGE_APP that was used), KINDS_APP (an app with keys
// named trap (canary), web (publishable), bff (exchange-only) and old (legacy import), and a
// canary use from 127.0.0.1 in the audit log), READ_TOKEN (a scoped admin token, role read).
import { chromium } from 'playwright-core';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const [admin, token, outDir = 'target/console-screenshots'] = process.argv.slice(2);
if (!admin || !token) {
  console.error('usage: node run.mjs <admin-url> <admin-token> [screenshot-dir]');
  process.exit(2);
}
rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: admin });
const page = await context.newPage();
const problems = [];
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.setDefaultTimeout(10000);

let n = 0;
async function step(name, fn) {
  process.stdout.write(`- ${name} … `);
  await fn();
  n += 1;
  // The show-once plaintext and the sign-in token are masked: no secret in a test artifact.
  await page.screenshot({
    path: join(outDir, `${String(n).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-')}.png`),
    fullPage: true,
    mask: [page.locator('#secret-value'), page.locator('#signin-form input')],
  });
  console.log('ok');
}
function check(cond, msg) { if (!cond) throw new Error(msg); }
const tid = (id) => page.getByTestId(id);
const env = process.env;
const NAV = ['nav-apps', 'nav-keys', 'nav-clients', 'nav-usage', 'nav-audit', 'signout'];
// Whether any navigation button is visible (issue 22 point 1: none before sign-in).
async function navVisible() {
  for (const id of NAV) if (await tid(id).isVisible()) return true;
  return false;
}
const WRITES = ['rotate', 'disable', 'enable', 'revoke', 'app-disable', 'app-enable'];
const writeButtons = () => page.evaluate((ids) => ids.reduce((n, id) => n + document.querySelectorAll(`[data-testid="${id}"]`).length, 0), WRITES);
// Signs in with `t` and waits for the console to know the token's role.
async function signInWith(t, role) {
  await tid('token').fill(t);
  await tid('signin').click();
  await tid('nav-apps').waitFor();
  await page.waitForFunction((r) => document.querySelector('#whoami').dataset.role === r, role);
}
// The page never scrolls sideways (issue 22 point 5).
function noPageOverflow() {
  return page.evaluate(() => {
    const d = document.documentElement;
    return { doc: d.scrollWidth, body: document.body.scrollWidth, view: d.clientWidth };
  });
}

try {
  const app = `console-${Date.now()}`;
  let keyId, plaintext;

  await step('headers', async () => {
    const resp = await page.goto(`${admin}/console/`);
    const h = resp.headers();
    check(resp.status() === 200, `status ${resp.status()}`);
    check((h['content-security-policy'] || '').includes("default-src 'self'"), 'CSP header');
    check((h['x-frame-options'] || '').toUpperCase() === 'DENY', 'X-Frame-Options');
    check((h['cache-control'] || '').includes('no-store'), 'no-store');
    // Issue 22 point 1: no navigation before sign-in (the nav's flex display used to beat `hidden`).
    check(!(await navVisible()), 'the navigation is not shown before sign-in');
    check(!(await tid('whoami').isVisible()), 'no role shown before sign-in');
    check(!(await tid('key-new-details').isVisible()) && !(await page.locator('#app-create').isVisible()), 'no forms before sign-in');
    check((await tid('status').textContent()) === '', 'no message before sign-in');
  });

  await step('wrong token refused', async () => {
    await tid('token').fill('not-the-token');
    await tid('signin').click();
    await page.waitForFunction(() => document.querySelector('#status').textContent.includes('refused'));
    check(await page.locator('#signin').isVisible(), 'still on the sign-in form');
    check(!(await navVisible()), 'the navigation is still hidden');
  });

  await step('sign in', async () => {
    await tid('token').fill(token);
    await tid('signin').click();
    await tid('nav-apps').waitFor();
    check(await page.evaluate(() => sessionStorage.length) === 1, 'token in sessionStorage');
    for (const id of NAV) check(await tid(id).isVisible(), `${id} shown after sign-in`);
    await page.waitForFunction(() => document.querySelector('#whoami').dataset.role === 'admin');
    check(await page.locator('#app-create').isVisible(), 'the bootstrap token may create apps');
  });

  await step('create app', async () => {
    await tid('app-name').fill(app);
    await tid('app-create').click();
    await page.locator(`tr[data-app="${app}"]`).waitFor();
    await tid('app-q').fill(app);
    await page.locator('#app-search button').click();
    await page.waitForFunction((a) => document.querySelectorAll('#apps-body tr').length === 1
      && document.querySelector('#apps-body tr').dataset.app === a, app);
  });

  await step('create key shown once', async () => {
    await tid('nav-keys').click();
    await tid('key-new').click();
    await tid('key-app').fill(app);
    await tid('key-name').fill('browser');
    await tid('key-scopes').fill('facts:read');
    await tid('key-expires').fill('30d');
    await tid('key-create').click();
    await tid('secret-dialog').waitFor({ state: 'visible' });
    plaintext = (await tid('secret-value').textContent()).trim();
    check(/^kw_live_/.test(plaintext), `plaintext ${plaintext.slice(0, 8)}…`);
    check((await page.locator('.warn').first().textContent()).includes('shown this once'), 'warning');
    await tid('secret-copy').click();
    const clip = await page.evaluate(() => navigator.clipboard.readText()).catch(() => null);
    check(clip === null || clip === plaintext, 'copied');
  });

  await step('key gone after closing', async () => {
    await tid('secret-done').click();
    await tid('secret-dialog').waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.querySelector('#secret-value').textContent === '');
    const html = await page.content();
    check(!html.includes(plaintext), 'the plaintext is no longer in the page');
    const row = page.locator('tr[data-name="browser"]');
    await row.waitFor();
    keyId = await row.getAttribute('data-key');
    check(!(await row.textContent()).includes(plaintext), 'the table shows the hint only');
  });

  await step('rotate with grace', async () => {
    await page.locator(`tr[data-key="${keyId}"] [data-testid=rotate]`).click();
    await tid('rotate-grace').fill('1h');
    await tid('rotate-confirm').click();
    await tid('secret-dialog').waitFor({ state: 'visible' });
    const successor = (await tid('secret-value').textContent()).trim();
    check(/^kw_live_/.test(successor) && successor !== plaintext, 'a new key is shown');
    await tid('secret-done').click();
    await tid('secret-dialog').waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.querySelector('#secret-value').textContent === '');
    check(!(await page.content()).includes(successor), 'successor gone after closing');
    await page.waitForFunction(() => document.querySelectorAll('#keys-body tr[data-name="browser"]').length === 2);
    // Issue 22 point 3: the rotated key says so and no longer offers Rotate; its successor does.
    const old = page.locator(`tr[data-key="${keyId}"]`);
    check(await old.locator('[data-testid=rotated]').isVisible(), 'the old key is marked rotated');
    check((await old.locator('[data-testid=rotate]').count()) === 0, 'no Rotate on a rotated key');
    const next = page.locator(`#keys-body tr[data-name="browser"]:not([data-key="${keyId}"])`);
    check((await next.locator('[data-testid=rotate]').count()) === 1, 'the successor can be rotated');
    check((await next.locator('[data-testid=rotated]').count()) === 0, 'the successor is not marked rotated');
    check((await old.locator('[data-testid=scopes]').textContent()) === 'facts:read', 'scopes shown');
    const box = await tid('keys-scroll').evaluate((e) => ({ sw: e.scrollWidth, cw: e.clientWidth }));
    check(box.sw <= box.cw, `the keys table fits at 1280 px, actions included (${box.sw} in ${box.cw})`);
  });

  await step('disable', async () => {
    await page.locator(`tr[data-key="${keyId}"] [data-testid=disable]`).click();
    await page.waitForFunction((id) => document.querySelector(`tr[data-key="${id}"] [data-testid=state]`)?.textContent === 'disabled', keyId);
  });

  await step('revoke', async () => {
    await page.locator(`tr[data-key="${keyId}"] [data-testid=revoke]`).click();
    await page.locator(`tr[data-key="${keyId}"] [data-testid=revoke-confirm]`).click();
    await page.waitForFunction((id) => document.querySelector(`tr[data-key="${id}"] [data-testid=state]`)?.textContent === 'revoked', keyId);
  });

  await step('filter keys', async () => {
    await tid('key-filter-state').selectOption('revoked');
    await tid('key-search').click();
    await page.waitForFunction(() => [...document.querySelectorAll('#keys-body [data-testid=state]')].every((c) => c.textContent === 'revoked'));
    await tid('key-filter-state').selectOption('');
  });

  await step('disable and enable the app', async () => {
    await tid('nav-apps').click();
    await page.locator(`tr[data-app="${app}"] [data-testid=app-disable]`).click();
    await page.waitForFunction(() => /1 key\(s\) and 0 client\(s\) disabled/.test(document.querySelector('#status').textContent));
    await page.locator(`tr[data-app="${app}"] [data-testid=app-enable]`).click();
    await page.waitForFunction(() => /1 key\(s\) and 0 client\(s\) enabled/.test(document.querySelector('#status').textContent));
  });

  if (env.KINDS_APP) {
    await step('key kinds scopes and last use', async () => {
      await tid('nav-keys').click();
      await tid('key-filter-app').fill(env.KINDS_APP);
      await tid('key-search').click();
      await page.waitForFunction(() => document.querySelectorAll('#keys-body tr').length === 4);
      const cell = (name, id) => page.locator(`#keys-body tr[data-name="${name}"] [data-testid=${id}]`).textContent();
      const kinds = {
        trap: 'secretcanary', web: 'publishable', bff: 'secretexchange-only', old: 'secretlegacy import',
      };
      for (const [name, want] of Object.entries(kinds)) {
        const got = await cell(name, 'kind');
        check(got === want, `kind of ${name}: ${got}`);
        check((await cell(name, 'last-used')) === 'never', `${name} never used`);
      }
      check((await cell('bff', 'scopes')) === 'facts:readfacts:write', 'both scopes of bff');
      // At a desktop width the whole keys table, actions included, fits without scrolling.
      const box = await tid('keys-scroll').evaluate((e) => ({ sw: e.scrollWidth, cw: e.clientWidth }));
      check(box.sw <= box.cw, `the keys table fits at 1280 px (${box.sw} in ${box.cw})`);
      // A canary is never rotated (the server refuses it).
      check((await page.locator('#keys-body tr[data-name="trap"] [data-testid=rotate]').count()) === 0, 'no Rotate on a canary');
      if (env.USED_KEY) {
        await tid('key-filter-app').fill(env.USAGE_APP || '');
        await tid('key-search').click();
        const used = page.locator(`tr[data-key="${env.USED_KEY}"] [data-testid=last-used]`);
        await used.waitFor();
        check(/^\d{4}-\d\d-\d\d \d\d:\d\dZ$/.test(await used.textContent()), `last used: ${await used.textContent()}`);
      }
      await tid('key-filter-app').fill('');
    });
  }

  await step('usage per key', async () => {
    await tid('nav-keys').click();
    await page.locator(`tr[data-key="${keyId}"] [data-testid=usage]`).click();
    await tid('usage-chart').waitFor();
    check((await tid('usage-key').inputValue()) === keyId, 'usage for the key');
  });

  await step('usage per app', async () => {
    await tid('usage-key').fill('');
    await tid('usage-app').fill(process.env.USAGE_APP || app);
    await tid('usage-show').click();
    if (process.env.USAGE_APP) {
      await page.locator('[data-testid=chart-svg] polyline').first().waitFor();
      const outcomes = await page.locator('[data-testid=chart-svg] polyline').evaluateAll((ls) => ls.map((l) => l.dataset.outcome));
      check(outcomes.includes('allowed'), `outcomes ${outcomes}`);
      // Issue 22 point 4: one point per minute of the period, 0 where there were no requests
      // (never a straight line from one busy minute to the next).
      const line = await page.locator('[data-testid=chart-svg] polyline[data-outcome=allowed]').evaluate((l) => ({
        values: l.dataset.values.split(',').map(Number),
        ys: l.getAttribute('points').trim().split(/\s+/).map((p) => Number(p.split(',')[1])),
        baseline: Number(l.ownerSVGElement.dataset.baseline),
      }));
      check(line.values.length >= 24 * 60 && line.values.length === line.ys.length, `${line.values.length} minutes plotted`);
      const first = line.values.findIndex((v) => v > 0);
      const last = line.values.length - 1 - [...line.values].reverse().findIndex((v) => v > 0);
      if (env.USAGE_EXPECT) {
        const busy = line.values.slice(first, last + 1).join(',');
        check(busy === env.USAGE_EXPECT, `allowed per minute ${busy}, expected ${env.USAGE_EXPECT}`);
      }
      line.values.forEach((v, i) => {
        if (v === 0) check(line.ys[i] === line.baseline, `minute ${i} without requests drawn at 0 (y ${line.ys[i]})`);
        else check(line.ys[i] < line.baseline, `minute ${i} with requests drawn above 0`);
      });
    } else {
      await page.waitForFunction(() => document.querySelector('#usage-chart').textContent.length > 0);
    }
  });

  if (env.USAGE_APP && env.USAGE_EXPECT) {
    // The same over the last 10 minutes, where the quiet minutes are plain to see.
    await step('usage chart quiet minutes at 0', async () => {
      await page.locator('#usage-form [name=since]').fill('10m');
      await tid('usage-show').click();
      await page.waitForFunction(() => Number(document.querySelector('[data-testid=chart-svg]')?.dataset.buckets) <= 12);
      const values = await page.locator('[data-testid=chart-svg] polyline[data-outcome=allowed]').evaluate((l) => l.dataset.values);
      check(values.length > 0 && values.replace(/^(0,)+/, '').replace(/(,0)+$/, '') === env.USAGE_EXPECT, `allowed per minute ${values}`);
    });
  }

  await step('audit with filters', async () => {
    await tid('nav-audit').click();
    await tid('audit-target').fill(keyId);
    await tid('audit-show').click();
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=audit-kind-cell]')].some((c) => c.textContent === 'key.revoked'));
    await tid('audit-kind').fill('key.disabled');
    await tid('audit-show').click();
    await page.waitForFunction(() => {
      const kinds = [...document.querySelectorAll('[data-testid=audit-kind-cell]')].map((c) => c.textContent);
      return kinds.length > 0 && kinds.every((k) => k === 'key.disabled');
    });
  });

  if (env.KINDS_APP) {
    await step('audit shows the source address', async () => {
      await tid('audit-target').fill('');
      await tid('audit-kind').fill('security.canary_used');
      await tid('audit-show').click();
      await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=audit-kind-cell]')].some((c) => c.textContent === 'security.canary_used'));
      const src = await page.locator('#audit-body tr').first().locator('[data-testid=audit-source]').textContent();
      check(src === '127.0.0.1', `source ${src}`);
      await tid('audit-kind').fill('');
    });
  }

  await step('sign out', async () => {
    await tid('signout').click();
    await page.locator('#signin').waitFor();
    check(await page.evaluate(() => sessionStorage.length) === 0, 'token dropped');
    check(!(await navVisible()), 'the navigation is hidden again');
  });

  if (env.READ_TOKEN) {
    // Issue 22 point 2: a read-only token is offered nothing that changes anything.
    await step('read-only token offers no change', async () => {
      await signInWith(env.READ_TOKEN, 'read');
      check((await tid('whoami').textContent()).includes('read-only'), 'the role is shown');
      check(!(await page.locator('#app-create').isVisible()), 'no Create app');
      await page.locator('#apps-body tr').first().waitFor();
      check((await writeButtons()) === 0, 'no Disable/Enable on apps');
      await tid('nav-keys').click();
      await page.locator('#keys-body tr').first().waitFor();
      check(!(await tid('key-new').isVisible()), 'no Create a key');
      check((await writeButtons()) === 0, 'no Rotate, Disable, Enable or Revoke on keys');
      check((await page.locator('#keys-body [data-testid=usage]').count()) > 0, 'reading is still offered');
    });

    // Issue 22 point 5: at 420 px the page does not scroll sideways; tables scroll in their box
    // and a key's hint stays on one line.
    await step('narrow window keys', async () => {
      await page.setViewportSize({ width: 420, height: 900 });
      await page.waitForFunction(() => document.documentElement.clientWidth === 420);
      const o = await noPageOverflow();
      check(o.doc <= o.view && o.body <= o.view, `page ${o.doc}/${o.body} px wide in a ${o.view} px window`);
      const box = await tid('keys-scroll').evaluate((e) => ({ sw: e.scrollWidth, cw: e.clientWidth }));
      check(box.cw <= o.view && box.sw > box.cw, `the keys table scrolls in its box (${box.sw} in ${box.cw})`);
      const hint = await page.locator('#keys-body [data-testid=hint]').first().evaluate((h) => ({
        lines: h.getClientRects().length,
        height: h.getBoundingClientRect().height,
        name: h.closest('tr').querySelector('td').getBoundingClientRect().height,
        line: parseFloat(getComputedStyle(h).lineHeight) || 20,
      }));
      check(hint.lines === 1 && hint.height < 1.5 * hint.line, `hint on one line (${hint.lines} boxes, ${hint.height} px)`);
      // The hint is no taller than a one-line name cell.
      check(hint.height <= hint.name, `hint ${hint.height} px, row cell ${hint.name} px`);
    });

    await step('narrow window audit', async () => {
      await tid('nav-audit').click();
      await page.locator('#audit-body tr').first().waitFor();
      const o = await noPageOverflow();
      check(o.doc <= o.view && o.body <= o.view, `page ${o.doc}/${o.body} px wide in a ${o.view} px window`);
    });

    await step('read-only sign out', async () => {
      await page.setViewportSize({ width: 1280, height: 900 });
      await tid('signout').click();
      await page.locator('#signin').waitFor();
      check(!(await navVisible()), 'the navigation is hidden again');
    });
  }

  // The one console error expected is the refused token of the second step (401).
  const unexpected = problems.filter((p) => !p.includes('401'));
  check(unexpected.length === 0, `browser errors: ${unexpected.join('; ')}`);
  console.log(`console e2e: ${n} passed, 0 failed`);
  await browser.close();
} catch (e) {
  console.log('FAILED');
  console.error(e && e.stack ? e.stack : e);
  await page
    .screenshot({ path: join(outDir, 'failure.png'), fullPage: true, mask: [page.locator('#secret-value'), page.locator('#signin-form input')] })
    .catch(() => {});
  console.error(problems.join('\n'));
  await browser.close();
  process.exit(1);
}
