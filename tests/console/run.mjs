// End-to-end test of keyward's web console in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core). Usage: node run.mjs <admin-url> <admin-token> [screenshot-dir]
// Exit 0 when every step passed; screenshots of each step go to the directory.
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
  });

  await step('wrong token refused', async () => {
    await tid('token').fill('not-the-token');
    await tid('signin').click();
    await page.waitForFunction(() => document.querySelector('#status').textContent.includes('refused'));
    check(await page.locator('#signin').isVisible(), 'still on the sign-in form');
  });

  await step('sign in', async () => {
    await tid('token').fill(token);
    await tid('signin').click();
    await tid('nav-apps').waitFor();
    check(await page.evaluate(() => sessionStorage.length) === 1, 'token in sessionStorage');
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
    } else {
      await page.waitForFunction(() => document.querySelector('#usage-chart').textContent.length > 0);
    }
  });

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

  await step('sign out', async () => {
    await tid('signout').click();
    await page.locator('#signin').waitFor();
    check(await page.evaluate(() => sessionStorage.length) === 0, 'token dropped');
  });

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
