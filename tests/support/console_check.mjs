// Drives wharf's web console in a real browser: Debian's chromium through playwright-core
// (which brings no browser of its own). tests/console.rs starts the API and a worker, makes the
// dead letters, runs this script, then checks the store and the audit log.
//
// Input: the environment variable CONSOLE_CHECK, JSON:
//   {base, chromium, keyA, keyB, keyReadOnly, deadA: [mail, xss], deadB, queuedJob,
//    messageA, xss, screenshots?}
// Output: one JSON line on stdout; exit 1 (with the reason on stderr) on the first failure.
// Needs NODE_PATH to hold playwright-core (scripts/test-tools.sh prints WHARF_NODE_PATH).
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);

function fail(message) {
  process.stderr.write(`console_check: ${message}\n`);
  process.exit(1);
}

let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  fail(`playwright-core is not installed (NODE_PATH=${process.env.NODE_PATH ?? ''}): run scripts/test-tools.sh (${e.message})`);
}

const cfg = JSON.parse(process.env.CONSOLE_CHECK ?? 'null') ?? fail('CONSOLE_CHECK is not set');
// PRODUCT §7: headless, no sandbox (root), no GPU, and nothing that phones home.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const WAIT = 15_000;

const log = (m) => process.stderr.write(`console_check: ${m}\n`);
const check = (ok, message) => {
  if (!ok) throw new Error(message);
};

const userDataDir = mkdtempSync(join(tmpdir(), 'wharf-chromium-'));
let context;
let page;
const consoleErrors = [];
const pageErrors = [];
const dialogs = [];
const requests = [];

async function shot(name) {
  if (cfg.screenshots && page) await page.screenshot({ path: join(cfg.screenshots, `${name}.png`), fullPage: true });
}

const text = (selector) => page.locator(selector).first().textContent({ timeout: WAIT });

/** Waits until `selector`'s text contains `wanted`. */
async function waitText(selector, wanted) {
  try {
    await page.waitForFunction(
      ([s, w]) => {
        const n = document.querySelector(s);
        return n !== null && n.textContent.includes(w);
      },
      [selector, wanted],
      { timeout: WAIT },
    );
  } catch {
    const now = await page.locator(selector).first().textContent({ timeout: 1000 }).catch(() => '(absent)');
    throw new Error(`${selector} never contained ${JSON.stringify(wanted)}; it has ${JSON.stringify(now)}`);
  }
}

const rowIds = (table) =>
  page.$$eval(`#${table} tbody tr[data-id]`, (rows) => rows.map((r) => r.dataset.id));

async function enterKey(key) {
  await page.fill('#key-input', key);
  await page.click('#key-form button[type=submit]');
  await page.locator('#tabs').waitFor({ state: 'visible', timeout: WAIT });
}

async function openTab(view) {
  await page.click(`#tabs button[data-view="${view}"]`);
  await page.locator(`#view-${view}`).waitFor({ state: 'visible', timeout: WAIT });
}

async function forgetKey() {
  await page.click('#forget-key');
  await page.locator('#key-form').waitFor({ state: 'visible', timeout: WAIT });
  const kept = await page.evaluate(() => sessionStorage.length);
  check(kept === 0, `sessionStorage still holds ${kept} item(s) after "Forget key"`);
  check(await page.locator('#tabs').isHidden(), 'the views stay reachable after "Forget key"');
  const rows = await page.$$eval('tbody tr', (rs) => rs.length);
  check(rows === 0, `${rows} table rows are still shown after "Forget key"`);
}

async function run() {
  log(`launching ${cfg.chromium}`);
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 900 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push({ text: m.text(), url: m.location().url ?? '' });
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('dialog', async (d) => {
    dialogs.push({ type: d.type(), message: d.message() });
    // Confirmations are what an operator accepts; anything else (an alert) is an injection.
    if (d.type() === 'confirm') await d.accept();
    else await d.dismiss();
  });
  context.on('request', (r) => requests.push(r.url()));

  // --- The page and its policy.
  const resp = await page.goto(`${cfg.base}/console`, { waitUntil: 'load' });
  check(resp.status() === 200, `GET /console answered ${resp.status()}`);
  const csp = resp.headers()['content-security-policy'] ?? '';
  check(csp.includes("default-src 'self'") && !csp.includes('unsafe'), `weak or missing CSP: ${csp}`);
  check(await page.title() === 'wharf console', `title: ${await page.title()}`);
  await shot('01-key');

  // --- Tenant A: queues.
  await enterKey(cfg.keyA);
  check(
    (await page.evaluate(() => [localStorage.length, document.cookie, location.href])).join('|') === `0||${cfg.base}/console`,
    'the key leaked into localStorage, a cookie or the URL',
  );
  check((await page.evaluate(() => sessionStorage.getItem('wharf.console.apiKey'))) === cfg.keyA, 'the key is not in sessionStorage');
  const diagnostic = '#queues-table tr[data-queue="diagnostic"]';
  await page.locator(diagnostic).waitFor({ timeout: WAIT });
  await waitText(`${diagnostic} td[data-col="dead"]`, '2');
  const updated = await text('#queues-updated');
  // Auto-refresh: the stamp moves within one period (5 s) and a bit.
  await page.waitForFunction((before) => document.getElementById('queues-updated').textContent !== before, updated, {
    timeout: 8000,
  });
  await shot('02-queues');

  // --- Dead letters: exactly A's two.
  await openTab('dead-letters');
  await page.locator('#dl-table tbody tr[data-id]').first().waitFor({ timeout: WAIT });
  const listed = await rowIds('dl-table');
  check(
    listed.length === 2 && cfg.deadA.every((id) => listed.includes(id)) && !listed.includes(cfg.deadB),
    `dead letters listed for A: ${listed} (A's: ${cfg.deadA}, B's: ${cfg.deadB})`,
  );
  const [mailId, xssId] = cfg.deadA;
  // An error message that is markup is shown as text and creates no element.
  await waitText(`#dl-table tr[data-id="${xssId}"] td.error-text`, cfg.xss);
  check((await page.$$eval('img', (n) => n.length)) === 0, 'an <img> from API data was created in the list');
  await shot('03-dead-letters');

  // --- Open one, read its error, replay it with an edited payload (a bad one first).
  await page.click(`#dl-table tr[data-id="${mailId}"]`);
  await waitText('#dl-detail-id', mailId);
  await waitText('#dl-attempts pre.attempt-error', cfg.messageA);
  await page.fill('#dl-payload', '{"op": "boom"}');
  await page.click('#dl-replay-edited');
  await page.locator('#error').waitFor({ state: 'visible', timeout: WAIT });
  await waitText('#error', '422');
  await waitText('#error .field-errors', 'payload.op');
  await shot('04-invalid-payload');
  await page.fill('#dl-payload', '{"op": "noop"}');
  await page.click('#dl-replay-edited');
  await waitText('#notice', `Replayed dead letter ${mailId} with the edited payload`);
  check(await page.locator('#error').isHidden(), 'the old error is still shown after a successful replay');
  await waitText('#dl-detail-fields', 'replayed');
  check(await page.locator('#dl-replay').isDisabled(), 'a replayed dead letter can be replayed again from the console');
  await shot('05-replayed');

  // --- Open the other (its error is markup), discard it.
  await page.click(`#dl-table tr[data-id="${xssId}"]`);
  await waitText('#dl-detail-id', xssId);
  await waitText('#dl-attempts pre.attempt-error', cfg.xss);
  check((await page.inputValue('#dl-payload')).includes(cfg.xss), 'the payload does not show the message');
  check((await page.$$eval('img', (n) => n.length)) === 0, 'an <img> from API data was created in the detail');
  await page.click('#dl-discard');
  await waitText('#notice', `Discarded dead letter ${xssId}`);
  await waitText('#dl-detail-fields', 'discarded');
  await shot('06-discarded');

  // --- Jobs: find the waiting email, cancel it.
  await openTab('jobs');
  await page.selectOption('#jobs-state', 'queued');
  await page.click('#jobs-filter button[type=submit]');
  await page.locator(`#jobs-table tr[data-id="${cfg.queuedJob}"]`).waitFor({ timeout: WAIT });
  await page.click(`#jobs-table tr[data-id="${cfg.queuedJob}"]`);
  await waitText('#job-detail-id', cfg.queuedJob);
  await page.locator('#job-cancel').waitFor({ state: 'visible', timeout: WAIT });
  await page.click('#job-cancel');
  await waitText('#notice', `Cancelled job ${cfg.queuedJob}`);
  await waitText('#job-detail-fields', 'cancelled');
  check(await page.locator('#job-cancel').isHidden(), 'Cancel is still offered for a cancelled job');
  await shot('07-cancelled');

  // So far only the deliberate 422 may have been logged (Chromium logs every failed fetch).
  const unexpected = consoleErrors.filter((e) => !/status of 422/.test(e.text));
  check(unexpected.length === 0 && pageErrors.length === 0, `console errors: ${JSON.stringify(unexpected)} ${pageErrors}`);
  check(consoleErrors.length === 1, `expected the one 422 in the console, got ${JSON.stringify(consoleErrors)}`);

  // --- Forget A's key; tenant B replays all of its dead letters matching a filter.
  await forgetKey();
  await enterKey(cfg.keyB);
  await openTab('dead-letters');
  await page.locator('#dl-table tbody tr[data-id]').first().waitFor({ timeout: WAIT });
  const listedB = await rowIds('dl-table');
  check(listedB.length === 1 && listedB[0] === cfg.deadB, `dead letters listed for B: ${listedB}`);
  await page.fill('#dl-error', 'for B');
  await page.click('#dl-replay-all');
  await waitText('#notice', 'Replayed 1 dead letter matching: error contains "for B"');
  await shot('08-bulk');

  // --- A key without `jobs:read`: the queues view names the missing scope.
  await forgetKey();
  await enterKey(cfg.keyReadOnly);
  await waitText('#error', '403');
  await waitText('#error', 'Needs the scope jobs:read');
  await shot('09-forbidden');
  const after = consoleErrors.slice(1).filter((e) => !/status of 403/.test(e.text));
  check(after.length === 0 && pageErrors.length === 0, `console errors: ${JSON.stringify(after)} ${pageErrors}`);

  // --- The confirmations were the operator's; no injected dialog fired.
  const kinds = dialogs.map((d) => d.type);
  check(JSON.stringify(kinds) === '["confirm","confirm","confirm"]', `dialogs: ${JSON.stringify(dialogs)}`);
  check(dialogs[0].message.includes(xssId) && dialogs[1].message.includes(cfg.queuedJob), `dialogs: ${JSON.stringify(dialogs)}`);
  check(dialogs[2].message.includes('error contains "for B"'), `the bulk confirmation hides the filter: ${dialogs[2].message}`);

  // --- Only this origin was asked for anything, and never with a key in the URL.
  const keys = [cfg.keyA, cfg.keyB, cfg.keyReadOnly];
  const foreign = requests.filter((u) => !u.startsWith(`${cfg.base}/`) || keys.some((k) => u.includes(k)));
  check(foreign.length === 0, `requests elsewhere or with a key: ${foreign}`);

  // --- Trusted Types are enforced: a markup sink throws (this logs an error, so it comes last).
  const sink = await page.evaluate(() => {
    try {
      document.body.insertAdjacentHTML('beforeend', '<b>x</b>');
      return 'allowed';
    } catch (e) {
      return e.name;
    }
  });
  check(sink === 'TypeError', `a markup sink is allowed (${sink}): the CSP lacks Trusted Types`);

  return { ok: true, dialogs, console_errors: consoleErrors.map((e) => e.text), requests: requests.length };
}

try {
  const result = await run();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
} catch (e) {
  await shot('failure').catch(() => {});
  process.stderr.write(`console_check: FAILED: ${e.stack ?? e}\n`);
  process.stderr.write(`console_check: console errors: ${JSON.stringify(consoleErrors)}\n`);
  process.stderr.write(`console_check: page errors: ${JSON.stringify(pageErrors)}\n`);
  process.stderr.write(`console_check: dialogs: ${JSON.stringify(dialogs)}\n`);
  await context?.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}
