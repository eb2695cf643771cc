// Browser end-to-end test of the dfsmr dashboard, run by TestBrowser
// (server/web/browser_test.go), which starts the server, the printer
// simulator and the report demo, and answers the "CMD ..." lines this
// script prints with one line on stdin. Chromium is the system's
// (DFSMR_CHROMIUM); playwright-core never downloads a browser.
import { chromium } from 'playwright-core';
import readline from 'node:readline';
import path from 'node:path';

const env = process.env;
const base = env.DFSMR_URL;
const shots = env.DFSMR_SCREENSHOTS;
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function ask(cmd) {
  console.log('CMD ' + cmd);
  const { value, done } = await lines.next();
  if (done) throw new Error('the test hung up');
  return value;
}
function check(cond, msg) {
  if (!cond) throw new Error('check failed: ' + msg);
}

const desktop = { width: 1280, height: 900 };
const phone = { width: 390, height: 844 };

// A fresh temporary profile (--user-data-dir) comes with every launch.
const browser = await chromium.launch({
  executablePath: env.DFSMR_CHROMIUM,
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function login(token, viewport) {
  const ctx = await browser.newContext({ viewport });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => { console.log('page error: ' + e.message); process.exitCode = 1; });
  await page.goto(base + '/instances');
  check(page.url().includes('/login'), 'a page without a session goes to the login: ' + page.url());
  await page.fill('#token', token);
  await page.click('button[type=submit]');
  await page.waitForURL(/\/instances$/);
  return { ctx, page };
}

async function shot(page, name) {
  const vp = page.viewportSize();
  const file = path.join(shots, `${name}-${vp.width < 600 ? 'phone' : 'desktop'}.png`);
  await page.screenshot({ path: file });
  console.log('screenshot ' + file);
}

try {
  const op = await login(env.DFSMR_OPERATOR_TOKEN, desktop);
  const page = op.page;

  // Bulk cancel by filter cancels exactly the counted instances.
  await page.goto(base + '/instances?machine=crawler&status=READY');
  await page.click('a:has-text("Cancel all matching")');
  await page.waitForURL(/\/confirm\?/);
  const count = (await page.textContent('#count')).trim();
  check(count === env.DFSMR_BULK_N, `the confirmation counts ${count}, want ${env.DFSMR_BULK_N}`);
  await shot(page, 'confirm-bulk-cancel');
  await page.click('button:has-text("Yes, cancel")');
  await page.waitForURL(/\/instances\?machine=crawler/);
  const bulk = await ask('check-bulk ' + count);
  check(bulk === 'ok', bulk);
  console.log(`bulk cancel: ${count} counted, ${count} cancelled`);

  // A printer finishes: its tile says "needs retrieval" within 1 s, with
  // no reload; confirming it good moves the job on, and the changelog
  // panel shows it.
  const tail = await op.ctx.newPage();
  await tail.goto(base + '/changes?machine=print_job');
  await tail.waitForSelector('#tail[data-state="live"]');
  await page.goto(base + '/printers');
  await page.waitForSelector('[data-printer="p1"][data-state="ready"]');
  await page.evaluate(() => { window.dfsmrNoReload = true; });
  const fin = await ask('order-p1');
  const job = fin.split(' ')[1];
  const t0 = Date.now();
  await page.waitForSelector('[data-printer="p1"][data-state="needs retrieval"]', { timeout: 1000 });
  console.log(`p1 finished ${job}: its tile said "needs retrieval" ${Date.now() - t0} ms later`);
  check(await page.evaluate(() => window.dfsmrNoReload === true), 'the printer wall reloaded');
  await page.waitForSelector(`#alerts p:has-text("${job}")`, { timeout: 1000 });
  await shot(page, 'printers-alert');
  await page.click('[data-printer="p1"] a:has-text("Confirm retrieval")');
  await page.waitForURL(/\/confirm\?/);
  await shot(page, 'confirm-retrieval');
  await page.click('button[value="good"]');
  await page.waitForURL(/\/printers$/);
  await page.waitForSelector('[data-printer="p1"] .job:has-text("desk-bracket-2")', { timeout: 5000 });
  await tail.waitForSelector(`#tail li:has-text("${job}"):has-text("retrieved"):has-text("by olga")`, { timeout: 2000 });
  await tail.waitForSelector(`#tail li:has-text("${job}"):has-text("→ done")`, { timeout: 5000 });
  console.log('retrieval confirmed good: p1 took desk-bracket-2, the changelog shows it');
  await tail.close();

  // The reader role sees no action, and a forged POST is refused.
  const rd = await login(env.DFSMR_READER_TOKEN, desktop);
  await rd.page.goto(base + '/instances/crawl-example-org');
  check(await rd.page.locator('a.button, .actions').count() === 0, 'the reader sees action buttons on an instance');
  await rd.page.goto(base + '/printers');
  check(await rd.page.locator('a.button').count() === 0, 'the reader sees action buttons on the wall');
  const forged = await rd.page.evaluate(async () => {
    const csrf = document.querySelector('input[name=csrf]').value;
    const r = await fetch('act', { method: 'POST', body: new URLSearchParams({ csrf, action: 'cancel', id: 'crawl-example-org' }) });
    return r.status;
  });
  check(forged === 403, `the reader's POST got ${forged}, want 403`);
  const noToken = await page.evaluate(async () => {
    const r = await fetch('act', { method: 'POST', body: new URLSearchParams({ action: 'cancel', id: 'crawl-example-org' }) });
    return r.status;
  });
  check(noToken === 403, `the operator's POST without a CSRF token got ${noToken}, want 403`);
  await rd.ctx.close();
  console.log('reader: no action buttons, forged POSTs refused');

  // The changelog tail resumes without a gap after the server restarts,
  // and after a pause.
  await page.goto(base + '/changes');
  await page.waitForSelector('#tail[data-state="live"]');
  await page.waitForSelector('#tail li');
  check((await ask('restart')) === 'ok', 'restart');
  await page.waitForSelector('#tail li:has-text("after-restart-2")', { timeout: 20000 });
  await page.click('#pause');
  await page.waitForSelector('#tail[data-state="paused"]');
  check((await ask('changes')) === 'ok', 'changes');
  await page.click('#pause');
  await page.waitForSelector('#tail li:has-text("while-paused-4")', { timeout: 5000 });
  const seqs = await page.$$eval('#tail li', (lis) => lis.map((li) => Number(li.dataset.seq)));
  for (let i = 1; i < seqs.length; i++) {
    check(seqs[i - 1] === seqs[i] + 1, `the tail jumps from seq ${seqs[i]} to ${seqs[i - 1]}`);
  }
  console.log(`changelog tail: ${seqs.length} changes, ${seqs[seqs.length - 1]}..${seqs[0]}, no gap across a restart and a pause`);

  // The crawler leases go past half their 30 s timeout without a
  // heartbeat: the leases page flags them, live.
  const mobile = await login(env.DFSMR_OPERATOR_TOKEN, phone);
  await page.goto(base + '/leases');
  await page.waitForSelector('tr.stuck:has-text("crawl-example-org")', { timeout: 20000 });
  await shot(page, 'leases');
  await mobile.page.goto(base + '/leases');
  await mobile.page.waitForSelector('tr.stuck');
  await shot(mobile.page, 'leases');
  console.log('leases: the crawler leases are flagged stuck');

  // Screenshots of every page, desktop and phone width.
  for (const vp of [desktop, phone]) {
    const p = vp === desktop ? page : mobile.page;
    for (const [name, url] of [['printers', '/printers'], ['machines', '/machines'], ['machine-report', '/machines/report'],
      ['machine-print_job', '/machines/print_job'], ['instances', '/instances?machine=report']]) {
      await p.goto(base + url);
      await shot(p, name);
    }
    // An instance waiting for its next try shows the countdown; else one
    // leased shows its lease.
    for (const status of ['WAITING', 'LEASED', '']) {
      await p.goto(base + '/instances?machine=report&status=' + status);
      if (await p.locator('table.list tbody a').count() > 0) break;
    }
    await p.locator('table.list tbody a').first().click();
    await p.waitForURL(/\/instances\/[^?]+$/);
    await shot(p, 'instance');
    await p.goto(base + '/changes');
    await p.waitForSelector('#tail li');
    await shot(p, 'changes');
  }
} catch (e) {
  console.log(String(e && e.stack || e));
  process.exitCode = 1;
} finally {
  await browser.close();
  lines.return?.();
  process.stdin.destroy();
}
