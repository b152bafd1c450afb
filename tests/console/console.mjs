// The console scenario in headless chromium (playwright-core, no test runner): run by
// tests/it/console.rs, which starts the daemon, seeds the jobs named in the environment, and
// releases a table lock when this prints "console: release the lock". Every wait is a
// Playwright wait on the page (locators, waitForFunction) with a deadline, never a sleep.
// UPKEEP_CONSOLE_SCREENSHOTS=1 saves each page to docs/console/<name>.png.

import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

const require = createRequire(path.join(process.env.UPKEEP_TEST_PLAYWRIGHT, 'package.json'));
const { chromium } = require('playwright-core');

const URL_ = process.env.CONSOLE_URL;
const TOKEN = process.env.CONSOLE_TOKEN;
const SLOW = process.env.CONSOLE_SLOW_JOB;
const FAILED = process.env.CONSOLE_FAILED_JOB;
const PLAN = process.env.CONSOLE_PLAN_JOB;
const ORPHANS = process.env.CONSOLE_ORPHANS.split(',');
const SHOTS = process.env.UPKEEP_CONSOLE_SCREENSHOTS === '1';
const T = 30_000;

function step(msg) { console.log(`console: ${msg}`); }
function check(cond, msg) { if (!cond) throw new Error(`check failed: ${msg}`); }

const browser = await chromium.launch({
  executablePath: process.env.UPKEEP_TEST_CHROMIUM,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
  headless: true,
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
context.setDefaultTimeout(T);
const page = await context.newPage();
const origins = [new URL(URL_).origin, new URL(process.env.CONSOLE_OPEN_URL).origin];
const problems = [];
page.on('request', (r) => { if (!origins.some((o) => r.url().startsWith(`${o}/`)) && !r.url().startsWith('data:')) problems.push(`request left the origin: ${r.url()}`); });
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  // The wrong token (401) and the invalid form value (400) are refused on purpose; anything else
  // logged as an error is a bug (a CSP violation, a failed module load, an exception).
  if (m.type() === 'error' && !/status of 40[01] /.test(m.text())) problems.push(`console error: ${m.text()}`);
});

async function shot(name) {
  if (!SHOTS) return;
  mkdirSync('docs/console', { recursive: true });
  await page.screenshot({ path: `docs/console/${name}.png`, fullPage: true });
}
/** No JavaScript placeholder shows as text (raw JSON sits in closed <details>, not rendered). */
async function noLeaks(where) {
  const text = await page.locator('main').innerText();
  check(!/\b(null|undefined|NaN)\b|\[object Object\]/.test(text), `no placeholder text on ${where}: ${text}`);
}
const heading = () => page.getByRole('heading', { level: 1 });
const waitState = (state, timeout = T) => heading().filter({ hasText: state }).locator(`.state-${state}`).waitFor({ timeout });

try {
  // Sign in: a wrong token first.
  step('sign in');
  await page.goto(`${URL_}/`);
  const tokenBox = page.getByLabel('Admin token');
  await tokenBox.waitFor();
  await shot('sign-in');
  await tokenBox.fill('not-the-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'refused this token' }).waitFor();
  await tokenBox.fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();

  // The jobs list, with the slow job running (blocked on the locked table: 1 of 3).
  step('jobs list');
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  const slowRow = page.locator(`tr[data-job="${SLOW}"]`);
  await slowRow.locator('[role="progressbar"][aria-valuenow="1"][aria-valuemax="3"]').waitFor();
  await page.locator(`tr[data-job="${FAILED}"] .state-failed`).waitFor();
  await noLeaks('jobs');
  await shot('jobs');
  // Filters: by state, then by kind; the URL keeps them.
  await page.getByLabel('State').selectOption('failed');
  await page.waitForURL(/state=failed/);
  await slowRow.waitFor({ state: 'detached' });
  await page.locator(`tr[data-job="${FAILED}"]`).waitFor();
  await page.getByLabel('State').selectOption('');
  await page.getByLabel('Kind').selectOption('orphan_files');
  await page.waitForURL(/kind=orphan_files/);
  await page.locator(`tr[data-job="${FAILED}"]`).waitFor({ state: 'detached' });
  await page.locator(`tr[data-job="${PLAN}"]`).waitFor();
  await page.getByLabel('Kind').selectOption('');
  await slowRow.waitFor();

  // Its page, then the bar moves without a reload.
  step('slow job page');
  await slowRow.getByRole('link').click();
  await page.waitForURL(`**/jobs/${SLOW}`);
  const bar = page.locator('main [role="progressbar"]');
  await bar.and(page.locator('[aria-valuenow="1"]')).waitFor();
  check(await bar.getAttribute('aria-valuemax') === '3', 'aria-valuemax is the total');
  await page.evaluate(() => { window.__sameDocument = true; });
  await noLeaks('running job');
  await shot('job-running');
  step('release the lock');
  await bar.and(page.locator('[aria-valuenow="2"]')).waitFor({ timeout: 60_000 });
  await page.locator('.timeline').getByText('failpoint vacuum.after_table reached').waitFor();
  check(await page.evaluate(() => window.__sameDocument === true), 'the page updated without a reload');

  step('cancel');
  await page.getByRole('button', { name: 'Cancel' }).click();
  await waitState('cancelled');
  await page.getByRole('button', { name: 'Retry' }).waitFor();

  // A vacuum dry run from the form: first a value the API refuses, shown at its field.
  step('new job form');
  await page.getByRole('navigation').getByRole('link', { name: 'New job' }).click();
  await page.getByLabel('Kind').selectOption('vacuum');
  await page.getByLabel('tables').fill('["tenants", "accounts"]');
  await page.getByLabel('mode').selectOption('plain');
  const timeout = page.getByLabel('lock_timeout_ms', { exact: false });
  check(await timeout.inputValue() === '5000', 'the default is shown');
  await timeout.fill('0');
  await page.getByRole('button', { name: 'Dry run' }).click();
  await page.locator('[data-field="lock_timeout_ms"] .field-error').filter({ hasText: /./ }).waitFor();
  check(await timeout.getAttribute('aria-invalid') === 'true', 'the field is marked invalid');
  await shot('new-job-error');
  await timeout.fill('5000');
  await page.getByRole('button', { name: 'Dry run' }).click();
  await page.waitForURL(/\/jobs\/[0-9a-f-]{36}$/);
  await waitState('succeeded');
  await page.getByRole('heading', { name: 'Plan (dry run)' }).waitFor();
  await page.locator('.result td').getByText('tenants', { exact: true }).waitFor();
  await shot('vacuum-dry-run');

  step('run for real');
  const dryUrl = page.url();
  await page.getByRole('button', { name: 'Run for real' }).click();
  await page.waitForURL((u) => u.href !== dryUrl && /\/jobs\/[0-9a-f-]{36}$/.test(u.pathname));
  await waitState('succeeded');
  await page.getByRole('columnheader', { name: 'size before' }).waitFor();
  await page.getByRole('columnheader', { name: 'size after' }).waitFor();
  check(await page.locator('.tag', { hasText: 'dry run' }).count() === 0, 'a real run');
  await noLeaks('vacuum result');
  await shot('vacuum-result');

  // Retry the failed job: its page by URL (a reload of a shared link).
  step('retry');
  await page.goto(`${URL_}/jobs/${FAILED}`);
  await waitState('failed');
  await page.getByRole('alert').filter({ hasText: 'failpoint' }).first().waitFor();
  await page.getByRole('button', { name: 'Retry' }).click();
  await waitState('succeeded', 60_000);
  await page.locator('section[aria-labelledby="attempts-title"] tbody tr').nth(1).waitFor();
  await shot('job-retried');

  // The orphan plan: its items, then confirm exactly it.
  step('orphan plan');
  await page.goto(`${URL_}/jobs/${PLAN}`);
  await page.getByRole('heading', { name: 'Items in this plan' }).waitFor();
  for (const key of ORPHANS) await page.locator('.result').getByText(key, { exact: true }).waitFor();
  await noLeaks('orphan plan');
  await shot('orphan-plan');
  await page.getByRole('button', { name: 'Confirm this plan' }).click();
  await page.waitForURL((u) => !u.pathname.endsWith(PLAN));
  await waitState('succeeded');
  const confirmUrl = page.url();
  await page.locator('.result dt', { hasText: /^deleted$/ }).waitFor();
  check((await page.locator('.result dt', { hasText: /^deleted$/ }).locator('xpath=following-sibling::dd[1]').innerText()).trim() === '2', 'two deleted');

  step('reload');
  await page.reload();
  check(page.url() === confirmUrl, 'same URL');
  await waitState('succeeded');
  await page.locator('.params').getByText(PLAN).waitFor();
  await shot('orphan-confirmed');

  step('overview');
  await page.getByRole('navigation').getByRole('link', { name: 'Overview' }).click();
  await page.getByRole('heading', { name: 'Database' }).waitFor();
  await page.getByRole('heading', { name: 'Tables the jobs touch' }).waitFor();
  await page.getByRole('cell', { name: 'Acme Support' }).waitFor();
  await page.getByLabel('Search tenants by name or ID').fill('globex');
  await page.getByRole('cell', { name: 'Globex Research' }).waitFor();
  await page.getByRole('cell', { name: 'Acme Support' }).waitFor({ state: 'detached' });
  await page.getByLabel('Search tenants by name or ID').fill('');
  await noLeaks('overview');
  await shot('overview');

  // Phone width: nothing wider than the screen.
  step('phone width');
  await page.setViewportSize({ width: 390, height: 844 });
  for (const p of ['/', `/jobs/${SLOW}`, `/jobs/${PLAN}`, '/new', '/overview']) {
    await page.goto(`${URL_}${p}`);
    await page.locator('main h1').first().waitFor();
    await page.waitForLoadState('networkidle');
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    check(width <= 390, `${p} fits 390 px (scrollWidth ${width})`);
  }
  await page.goto(`${URL_}/`);
  await page.locator(`tr[data-job="${SLOW}"]`).waitFor();
  await shot('jobs-phone');
  await page.goto(`${URL_}/jobs/${PLAN}`);
  await page.getByRole('heading', { name: 'Items in this plan' }).waitFor();
  await shot('job-phone');

  step('pages of jobs');
  await page.goto(`${URL_}/?limit=2`);
  const rows = page.locator('table.jobs tbody tr');
  await rows.nth(1).waitFor();
  const firstPage = await rows.evaluateAll((trs) => trs.map((tr) => tr.dataset.job));
  check(firstPage.length === 2, `two jobs a page: ${firstPage}`);
  await page.getByRole('button', { name: 'Older jobs' }).click();
  await page.waitForURL(/cursor=/);
  await page.waitForFunction((seen) => {
    const ids = [...document.querySelectorAll('table.jobs tbody tr')].map((tr) => tr.dataset.job);
    return ids.length > 0 && ids.every((id) => !seen.includes(id));
  }, firstPage);
  await page.getByRole('link', { name: 'Newest' }).click();
  await page.waitForFunction((first) => document.querySelector('table.jobs tbody tr')?.dataset.job === first, firstPage[0]);
  await page.goBack();
  await page.waitForURL(/cursor=/);

  step('keyboard and sign out');
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto(`${URL_}/`);
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  await page.getByRole('button', { name: 'Sign out' }).focus();
  await page.keyboard.press('Enter');
  await page.getByLabel('Admin token').waitFor();
  check(await page.evaluate(() => sessionStorage.length) === 0, 'the token is forgotten');

  step('a daemon without a token');
  await page.goto(`${process.env.CONSOLE_OPEN_URL}/`);
  await page.getByRole('heading', { name: 'Jobs' }).waitFor();
  await page.getByText('No admin token configured').waitFor();
  check(await page.getByLabel('Admin token').count() === 0, 'no sign-in form');

  check(problems.length === 0, problems.join('\n'));
  step('all steps passed');
} catch (e) {
  console.error(e.stack ?? String(e));
  console.error(`at ${page.url()}`);
  try {
    mkdirSync('target/console', { recursive: true });
    await page.screenshot({ path: 'target/console/failure.png', fullPage: true });
    console.error('screenshot: target/console/failure.png');
  } catch { /* best effort */ }
  if (problems.length) console.error(problems.join('\n'));
  await browser.close();
  process.exit(1);
}
await browser.close();
