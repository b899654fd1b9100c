// Drives the labelling app in Debian's Chromium through playwright-core (no Playwright browsers).
//
//   node label.mjs <base-url> <annotator-token> <screenshot.png> [<admin-token>]
//
// Run by tests/browser.rs against a server holding 3 items of 4 responses each, all assigned to the
// annotator. Item 1 is ranked with the mouse (pointer drags and a tie click), item 2 with the
// keyboard only, item 3 is flagged as broken. With an admin token it then signs in as the admin,
// checks the overview and saves new guidelines (screenshot: label-admin.png next to the first).
// Prints one JSON line on stdout, what it submitted:
//   {"items": [{"assignment", "item", "prompt", "served", "action", "tiers" | "flag", "comment"?}, ...],
//    "guidelines": "…" (only with an admin token)}
// where `served` is the order the responses were shown in (ids, top first).
// Exits non-zero on any failed check, page error, console error or unexpected HTTP error.
import { chromium } from 'playwright-core';

const [base, token, screenshot, adminToken] = process.argv.slice(2);
if (!base || !token || !screenshot) {
  console.error('usage: node label.mjs <base-url> <annotator-token> <screenshot.png> [<admin-token>]');
  process.exit(2);
}

const log = (...args) => console.error('[label.mjs]', ...args);
const problems = [];
let expectUnauthorized = false; // the one deliberate bad sign-in

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: 20_000,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(5_000);
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // The page links a data: icon (the server's CSP allows `img-src data:`); should that go, Chromium
  // asks for /favicon.ico by itself, which is no failure of the page.
  const favicon = (url) => new URL(url).pathname === '/favicon.ico';
  const login401 = (url) => expectUnauthorized && new URL(url).pathname === '/api/login';
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const { url } = m.location();
    if (url && /status of 40[14]/.test(m.text()) && (favicon(url) || login401(url))) return;
    problems.push(`console error: ${m.text()} (${url || 'no location'})`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400 && !favicon(r.url()) && !(login401(r.url()) && r.status() === 401)) {
      problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
    }
  });
  const failIfProblems = () => check(problems.length === 0, problems.join('; '));

  // ---- helpers reading the page ----------------------------------------------------------------

  const shown = () => page.$$eval('#responses > li.response', (lis) => lis.map((li) => ({
    id: Number(li.dataset.id),
    rank: li.querySelector('.rank').textContent.replace(/\D/g, ''),
    tiedDown: li.querySelector('.tie-toggle').getAttribute('aria-pressed') === 'true',
  })));
  const order = async () => (await shown()).map((c) => c.id);
  const task = () => page.$eval('#task', (t) => ({
    assignment: Number(t.dataset.assignment),
    item: Number(t.dataset.item),
    prompt: document.querySelector('#prompt').textContent,
    progress: document.querySelector('#progress').textContent,
  }));

  // Checks the displayed order, tie toggles and rank numbers against `tiers` (best first).
  async function expectTiers(tiers, what) {
    const cards = await shown();
    const flat = tiers.flat();
    const ranks = tiers.flatMap((t, i) => t.map(() => String(i + 1)));
    const ties = tiers.flatMap((t) => t.map((_, j) => j < t.length - 1));
    const got = { order: cards.map((c) => c.id), ranks: cards.map((c) => c.rank), ties: cards.map((c) => c.tiedDown) };
    check(same(got, { order: flat, ranks, ties }),
      `${what}: expected ${JSON.stringify({ order: flat, ranks, ties })}, page shows ${JSON.stringify(got)}`);
    log(`${what}: ${JSON.stringify(tiers)}`);
  }

  async function focusedId() {
    return page.evaluate(() => {
      const a = document.activeElement;
      return a && a.classList.contains('response') ? Number(a.dataset.id) : null;
    });
  }

  // A real mouse drag of the card at position `from` (by its handle) to position `to`.
  async function drag(from, to) {
    const cards = page.locator('#responses > li.response');
    const grip = await cards.nth(from).locator('.grip').boundingBox();
    const target = await cards.nth(to).boundingBox();
    const x = grip.x + grip.width / 2;
    const y = grip.y + Math.min(grip.height / 2, 30);
    // Above the middle of the card now at `to` when moving up, below it when moving down.
    const ty = target.y + target.height * (to < from ? 0.25 : 0.75);
    await page.mouse.move(x, y);
    await page.mouse.down();
    await page.mouse.move(x + 3, y + (ty > y ? 8 : -8), { steps: 2 });
    check(await page.locator('#responses > li.placeholder').count() === 1, 'a drop placeholder shows while dragging');
    await page.mouse.move(x + 6, ty, { steps: 12 });
    await page.mouse.up();
    check(await page.locator('#responses > li.placeholder').count() === 0, 'the placeholder is gone after the drop');
  }

  async function waitForNextItem(previous, doneCount) {
    await page.waitForFunction(
      ([prev, progress]) => {
        const p = document.querySelector('#progress').textContent;
        const t = document.querySelector('#task');
        const allDone = !document.querySelector('#all-done').hidden;
        return p.startsWith(progress) && (allDone || (!t.hidden && Number(t.dataset.assignment) !== prev));
      },
      [previous.assignment, `${doneCount} /`],
    );
  }

  // ---- sign in ---------------------------------------------------------------------------------

  await page.goto(base);
  await page.locator('#token').waitFor();
  check(await page.locator('#task').isHidden(), 'the task view is hidden before sign-in');
  expectUnauthorized = true;
  const logged401 = page.waitForEvent('console', (m) => m.type() === 'error' && login401(m.location().url || 'x:/'));
  await page.fill('#token', 'not-a-valid-token');
  await page.click('#sign-in');
  await page.locator('#error').waitFor({ state: 'visible' });
  const message = (await page.textContent('#error')).trim();
  check(message.length > 0, 'a bad token shows an error message');
  check(await page.getAttribute('#error', 'role') === 'alert', '#error has role=alert');
  log(`bad token rejected: "${message}"`);
  await logged401; // Chromium logs the failed request; only this one is expected
  expectUnauthorized = false;
  failIfProblems();

  await page.fill('#token', token);
  await page.press('#token', 'Enter');
  await page.locator('#task').waitFor({ state: 'visible' });
  check(await page.locator('#error').isHidden(), 'the error is cleared after signing in');
  const stored = await page.evaluate(() => Object.keys(sessionStorage).length);
  check(stored === 1, 'the token is kept in sessionStorage');

  const done = [];

  // ---- item 1: the mouse -----------------------------------------------------------------------

  const t1 = await task();
  check(/^0 \/ 3 done$/.test(t1.progress), `progress starts at "0 / 3 done", shows "${t1.progress}"`);
  const [a, b, c, d] = await order();
  check(d !== undefined, 'item 1 shows 4 responses');
  await expectTiers([[a], [b], [c], [d]], 'item 1 as served');
  await drag(3, 0);
  await expectTiers([[d], [a], [b], [c]], 'item 1 after dragging the 4th card to the top');
  await drag(2, 1);
  await expectTiers([[d], [b], [a], [c]], 'item 1 after dragging the 3rd card to 2nd');
  await page.click('#responses > li.response:nth-child(3) .tie-toggle');
  const tiers1 = [[d], [b], [a, c]];
  await expectTiers(tiers1, 'item 1 after tying the 3rd and 4th');
  const comment = 'C and A are equally good; D is the clearest.';
  await page.fill('#comment', comment);
  await page.click('#guidelines > summary');
  await page.mouse.move(1240, 880);
  await page.screenshot({ path: screenshot, fullPage: false });
  log(`screenshot: ${screenshot}`);
  await page.click('#submit');
  await waitForNextItem(t1, 1);
  done.push({ ...t1, served: [a, b, c, d], action: 'submit', tiers: tiers1, comment });

  // ---- item 2: the keyboard only ---------------------------------------------------------------

  const t2 = await task();
  check(t2.prompt !== t1.prompt, 'the prompt changes to the next item');
  check(t2.progress.startsWith('1 / 3'), `progress advances to 1 / 3, shows "${t2.progress}"`);
  const [p, q, r, s] = await order();
  if ((await focusedId()) === null) {
    for (let i = 0; i < 30 && (await focusedId()) === null; i += 1) await page.keyboard.press('Tab');
  }
  check((await focusedId()) === p, 'keyboard focus is on the first response');
  await page.keyboard.press('Alt+ArrowDown');
  await expectTiers([[q], [p], [r], [s]], 'item 2 after Alt+ArrowDown');
  await page.keyboard.press('Shift+ArrowDown');
  await expectTiers([[q], [r], [p], [s]], 'item 2 after Shift+ArrowDown');
  check((await focusedId()) === p, 'focus stays on the moved response');
  await page.keyboard.press('ArrowUp');
  check((await focusedId()) === r, 'ArrowUp moves focus up');
  await page.keyboard.press('t');
  await expectTiers([[q], [r, p], [s]], 'item 2 after t (tie with the one below)');
  await page.keyboard.press('j');
  await page.keyboard.press('ArrowDown');
  check((await focusedId()) === s, 'j and ArrowDown move focus down');
  await page.keyboard.press('1');
  await expectTiers([[s], [q], [r, p]], 'item 2 after 1 (move to the top)');
  await page.keyboard.press('Alt+ArrowDown');
  await expectTiers([[q], [s], [r, p]], 'item 2 after Alt+ArrowDown');
  await page.keyboard.press('Alt+ArrowDown');
  const tiers2 = [[q], [r, p], [s]];
  await expectTiers(tiers2, 'item 2 after Alt+ArrowDown past the tied pair');
  check((await focusedId()) === s, 'focus follows the moved response');
  await page.keyboard.press('Control+Enter');
  await waitForNextItem(t2, 2);
  done.push({ ...t2, served: [p, q, r, s], action: 'submit', tiers: tiers2 });

  // ---- item 3: flag as broken ------------------------------------------------------------------

  const t3 = await task();
  check(t3.prompt !== t2.prompt && t3.progress.startsWith('2 / 3'), `item 3 shows, progress "${t3.progress}"`);
  check(await page.inputValue('#comment') === '', 'the comment box is empty for a new item');
  const t3served = await order();
  await page.click('#flag-broken');
  await page.locator('#all-done').waitFor({ state: 'visible' });
  check(await page.locator('#task').isHidden(), 'the task view is hidden when the queue is empty');
  done.push({ ...t3, served: t3served, action: 'flag', flag: 'broken' });

  const report = { items: done };

  // ---- the admin overview ----------------------------------------------------------------------

  if (adminToken) {
    await page.click('#sign-out');
    await page.locator('#login').waitFor({ state: 'visible' });
    check(await page.evaluate(() => sessionStorage.length) === 0, 'signing out forgets the token');
    await page.fill('#token', adminToken);
    await page.press('#token', 'Enter');
    await page.locator('#admin').waitFor({ state: 'visible' });
    check(await page.locator('#nav-label').isVisible(), 'an admin can switch to labelling');
    const text = (sel) => page.textContent(sel).then((t) => t.trim());
    const stats = [await text('#stat-total'), await text('#stat-complete'), await text('#stat-flagged')];
    check(same(stats, ['3', '3', '1']), `items total/complete/flagged show 3/3/1, got ${stats}`);
    const rows = await page.$$eval('#annotators tbody tr', (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
    check(rows.some((r) => same(r, ['alice', 'annotator', '2', '0', '1', '0'])), `alice's row: ${JSON.stringify(rows)}`);
    check(await text('#alpha') === 'n/a', 'α without overlap shows n/a');
    const guidelines = `Rank by helpfulness first.\nTies are fine — use them. <b>literal</b> ${Date.now()}`;
    await page.fill('#guidelines-editor', guidelines);
    await page.click('#save-guidelines');
    await page.waitForFunction(() => document.querySelector('#status').textContent.includes('Guidelines saved'));
    await page.click('#refresh');
    await page.waitForFunction(() => document.querySelector('#status').textContent.includes('Refreshed'));
    check(await page.inputValue('#guidelines-editor') === guidelines, 'the saved guidelines load back');
    await page.screenshot({ path: screenshot.replace(/[^/\\]*$/, 'label-admin.png'), fullPage: true });
    report.guidelines = guidelines;
  }

  await page.waitForTimeout(50);
  failIfProblems();
  for (const item of done) delete item.progress;
  process.stdout.write(`${JSON.stringify(report)}\n`);
} catch (err) {
  log(err.stack || String(err));
  if (problems.length) log(`also: ${problems.join('; ')}`);
  exitCode = 1;
} finally {
  await browser.close();
}
process.exit(exitCode);
