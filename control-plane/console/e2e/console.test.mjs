// Browser test of the operator console in headless Chromium (playwright-core
// driving Debian's chromium). Run by control-plane/tests/console.rs against a
// real server it has seeded; exits non-zero on the first failed check.
//
// Environment (all set by the Rust test):
//   CONSOLE_BASE_URL        http://127.0.0.1:<port>
//   CONSOLE_ADMIN, CONSOLE_ADMIN_PASSWORD           a SYSTEM / GLOBAL user
//   CONSOLE_OVERVIEW, CONSOLE_OVERVIEW_PASSWORD     an OVERVIEW / GLOBAL user
//   CONSOLE_ENTITY, CONSOLE_ENTITY_PASSWORD         a TECHNICAL / ENTITY user
//   CONSOLE_UNIT            the unit with telemetry, disabled, with an open alert (in the entity)
//   CONSOLE_OTHER_UNIT      a unit outside the entity user's entity
//   CONSOLE_TELEMETRY_POINTS  voltage points seeded within the last 24 hours
//   CONSOLE_BALANCE_POINTS    balance rows seeded within the last 24 hours
//   CONSOLE_SCREENSHOTS     folder for the screenshots
//   CHROMIUM                the browser binary (default /usr/bin/chromium)
//   CONSOLE_SCENARIO        "all" (default) or "tiles": only the map over the
//                           tile server at CONSOLE_TILE_ORIGIN (the server is
//                           configured with it and has two located units)

import {chromium} from 'playwright-core';
import {mkdirSync} from 'node:fs';
import {join} from 'node:path';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env('CONSOLE_BASE_URL');
const SCENARIO = process.env.CONSOLE_SCENARIO || 'all';
const UNIT = SCENARIO === 'all' ? env('CONSOLE_UNIT') : null;
const OTHER = SCENARIO === 'all' ? env('CONSOLE_OTHER_UNIT') : null;
const TILES = SCENARIO === 'tiles' ? env('CONSOLE_TILE_ORIGIN') : null;
const SHOTS = env('CONSOLE_SCREENSHOTS');
mkdirSync(SHOTS, {recursive: true});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  // Playwright gives every launch a fresh temporary profile of its own.
});

const jsErrors = [];
let current = null; // the page in use, for a screenshot when a check fails
let step = 'start';
const log = (s) => { step = s; console.log(`- ${s}`); };

async function newPage() {
  const context = await browser.newContext({viewport: {width: 1360, height: 900}});
  const page = await context.newPage();
  current = page;
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => jsErrors.push(`${step}: ${e.message}`));
  // Everything the page loads must come from the server under test (and
  // the tile server, when there is one).
  const allowed = (url) => url.startsWith(BASE) || (TILES && url.startsWith(TILES));
  await page.route('**/*', (route) => (allowed(route.request().url()) ? route.continue() : route.abort()));
  return page;
}

async function shot(page, name) {
  const file = join(SHOTS, `${name}.png`);
  await page.screenshot({path: file, fullPage: true});
  console.log(`  screenshot ${file}`);
}

async function logIn(page, user, password) {
  await page.goto(`${BASE}/console`);
  await page.waitForSelector('[data-testid=login-form]');
  await page.fill('input[name=username]', user);
  await page.fill('input[name=password]', password);
  await page.click('form.login button[type=submit]');
  await page.waitForSelector('[data-testid=fleet-table]');
}

async function confirm(page, fields = {}) {
  await page.waitForSelector('[data-testid=confirm-dialog]');
  for (const [name, value] of Object.entries(fields)) await page.fill(`dialog [name=${name}]`, value);
  await page.click('[data-testid=confirm-ok]');
  await page.waitForSelector('[data-testid=confirm-dialog]', {state: 'detached'});
}

/** Pixels of the chart's canvas drawn in the series colour (r, g, b). */
async function strokePixels(page, testid, [r, g, b]) {
  return page.$eval(`[data-testid=${testid}] canvas`, (canvas, rgb) => {
    const {data} = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40 && Math.abs(data[i + 2] - rgb[2]) < 40 && data[i + 3] > 100) n++;
    }
    return n;
  }, [r, g, b]);
}

async function admin() {
  const page = await newPage();
  log('login page');
  await page.goto(`${BASE}/console`);
  await page.waitForSelector('[data-testid=login-form]');
  await shot(page, '01-login');
  await page.fill('input[name=username]', env('CONSOLE_ADMIN'));
  await page.fill('input[name=password]', 'wrong password');
  await page.click('form.login button[type=submit]');
  await page.waitForSelector('form.login .error:not(:empty)');
  assert.match(await page.textContent('form.login .error'), /Invalid username or password/);

  log('log in as the admin and see the fleet');
  await logIn(page, env('CONSOLE_ADMIN'), env('CONSOLE_ADMIN_PASSWORD'));
  assert.match(await page.textContent('[data-testid=who]'), /SYSTEM · GLOBAL/);
  await page.waitForSelector('[data-testid=coordinate-plot] circle.unit-dot');
  const dots = await page.$$eval('circle.unit-dot', (els) => els.map((e) => e.dataset.imei).sort());
  assert.deepEqual(dots, [UNIT, OTHER].sort(), 'one dot per located unit');
  assert.equal(await page.textContent('[data-testid=count-filtered]'), '2');
  await shot(page, '02-fleet');

  log('filter the fleet: units with open alerts');
  await page.selectOption('select[name=alerts]', 'open');
  await page.waitForFunction(() => document.querySelector('[data-testid=count-filtered]')?.textContent === '1');
  assert.deepEqual(await page.$$eval('circle.unit-dot', (els) => els.map((e) => e.dataset.imei)), [UNIT]);
  await page.selectOption('select[name=alerts]', '');
  await page.waitForFunction(() => document.querySelector('[data-testid=count-filtered]')?.textContent === '2');
  log('filter the fleet: online and offline (the other unit was last seen 3 days ago)');
  const dotsShown = () => page.$$eval('circle.unit-dot', (els) => els.map((e) => e.dataset.imei));
  await page.selectOption('select[name=online]', '24');
  await page.waitForFunction(() => document.querySelector('[data-testid=count-filtered]')?.textContent === '1');
  assert.deepEqual(await dotsShown(), [UNIT]);
  await page.selectOption('select[name=online]', '-24');
  await page.waitForFunction((o) => document.querySelector('circle.unit-dot')?.dataset.imei === o, OTHER);
  assert.equal(await page.textContent('[data-testid=count-filtered]'), '1');
  assert.deepEqual(await dotsShown(), [OTHER]);
  await page.selectOption('select[name=online]', '-168');
  await page.waitForSelector('[data-testid=coordinate-plot-empty]');
  assert.equal(await page.textContent('[data-testid=count-filtered]'), '0');
  await page.selectOption('select[name=online]', '');
  await page.waitForFunction(() => document.querySelector('[data-testid=count-filtered]')?.textContent === '2');

  log('find the unit by searching');
  await page.fill('[data-testid=fleet-search]', UNIT.slice(-6));
  await page.press('[data-testid=fleet-search]', 'Enter');
  await page.waitForFunction(() => document.querySelector('[data-testid=count-filtered]')?.textContent === '1');
  const rows = await page.$$eval('[data-testid=fleet-table] tbody tr a.imei', (els) => els.map((e) => e.textContent));
  assert.deepEqual(rows, [UNIT]);
  await page.click(`[data-testid=fleet-table] a.imei`);

  log('the unit page');
  await page.waitForSelector('[data-testid=unit-imei]');
  assert.equal(await page.textContent('[data-testid=unit-imei]'), UNIT);
  assert.match(await page.textContent('[data-testid=unit-enable]'), /^disabled$/);
  assert.match(await page.textContent('[data-testid=pending]'), /Nothing pending/);
  assert.match(await page.textContent('[data-testid=parts-table]'), /Battery 17Ah.*BAT-0001/);
  assert.match(await page.textContent('[data-testid=notes-table]'), /Customer asked for a call back/);
  assert.match(await page.textContent('[data-testid=unit-alerts]'), /battery voltage low/);
  assert.match(await page.textContent('[data-testid=history-connections]'), /-1\.2921/);
  const mts = await page.textContent('[data-testid=mt-history]');
  assert.match(mts, /status_update.*failed.*gateway: expired.*payment_commands.*delivered/s, 'MT history, newest first');

  log('enable it and see the pending state');
  await page.click('button[data-action=enable]');
  await confirm(page);
  await page.waitForSelector('[data-testid=pending-enable]');
  assert.match(await page.textContent('[data-testid=pending-enable]'), /pending: enable/);
  assert.match(await page.textContent('[data-testid=pending]'), /Enable \(requested, waiting for the unit to confirm\)/);
  assert.match(await page.textContent('[data-testid=toast]'), /enable/i);

  log('a wakeup SMS with no SMS provider configured is shown as not sent, with why');
  assert.match(await page.textContent('[data-testid=history-sms]'), /No SMS/);
  await page.click('button[data-action=send_wakeup]');
  await confirm(page);
  await page.waitForSelector('table[data-testid=history-sms]');
  assert.match(await page.textContent('[data-testid=toast].error'), /Send wakeup SMS failed: .*not sent/);
  assert.match(await page.textContent('[data-testid=history-sms]'), /WAKEUP.*NotSent.*no SMS provider is configured/);

  log('telemetry charts over the last 24 hours');
  await page.selectOption('[data-testid=range]', '24');
  await page.waitForSelector('[data-testid=charts][data-range="24"] [data-testid=chart-voltage][data-rendered]');
  await page.waitForSelector('[data-testid=charts][data-range="24"] [data-testid=chart-balance][data-rendered]');
  const voltage = await page.getAttribute('[data-testid=chart-voltage]', 'data-points');
  assert.equal(voltage, env('CONSOLE_TELEMETRY_POINTS'), 'every seeded voltage point is plotted');
  assert.equal(await page.getAttribute('[data-testid=chart-voltage]', 'data-rendered'), voltage);
  assert.equal(await page.getAttribute('[data-testid=chart-balance]', 'data-points'), env('CONSOLE_BALANCE_POINTS'));
  // The line is really drawn: the canvas holds pixels in the series colour.
  const drawn = await strokePixels(page, 'chart-voltage', [0x1f, 0x6f, 0xeb]);
  assert.ok(drawn > 100, `voltage line pixels: ${drawn}`);
  // Temperature was not seeded: that chart says so instead of drawing.
  assert.equal(await page.getAttribute('[data-testid=chart-temperature]', 'data-points'), '0');
  log('a longer range is downsampled');
  await page.selectOption('[data-testid=range]', '720');
  await page.waitForSelector('[data-testid=charts][data-range="720"] [data-testid=chart-voltage][data-rendered]');
  assert.match(await page.textContent('[data-testid=charts]'), /Downsampled: mean per 3h\./);
  const coarse = Number(await page.getAttribute('[data-testid=chart-voltage]', 'data-points'));
  assert.ok(coarse > 0 && coarse < Number(voltage), `downsampled points: ${coarse}`);
  await page.selectOption('[data-testid=range]', '24');
  await page.waitForSelector('[data-testid=charts][data-range="24"] [data-testid=chart-voltage][data-rendered]');
  await shot(page, '03-unit');

  log('alerts: dismiss the open one');
  await page.click('nav a[href="#/alerts"]');
  await page.waitForSelector('[data-testid=alerts-table] button[data-action=dismiss]');
  await shot(page, '04-alerts');
  await page.click('button[data-action=dismiss]');
  await confirm(page, {dismissal_reason: 'checked by phone'});
  await page.waitForSelector('p[data-testid=alerts-table]');
  assert.match(await page.textContent('p[data-testid=alerts-table]'), /No alerts/);
  await page.check('main input[type=checkbox]');
  await page.waitForSelector('text=checked by phone');

  log('dead letters: decode and discard');
  await page.click('nav a[href="#/dead-letters"]');
  await page.waitForSelector('[data-testid=dead-letters-table] button[data-action=decode]');
  await page.click('button[data-action=decode]');
  await page.waitForSelector('[data-testid=decoded]:not([hidden])');
  assert.match(await page.textContent('[data-testid=decoded]'), /Connected/);
  await shot(page, '05-dead-letters');
  await page.click('button[data-action=discard]');
  await confirm(page);
  await page.waitForFunction(() => document.querySelector('[data-testid=dead-letters-table]')?.textContent.includes('discarded'));

  log('webhooks: subscribe and read the delivery log');
  await page.click('nav a[href="#/webhooks"]');
  await page.waitForSelector('[data-testid=subscribe-form]');
  await page.selectOption('[data-testid=subscribe-form] select[name=channel]', 'dcm');
  await page.fill('[data-testid=subscribe-form] input[name=url]', 'http://127.0.0.1:9/console-hook');
  await page.click('[data-testid=subscribe-form] button');
  await page.waitForSelector('[data-testid=confirm-dialog]');
  assert.match(await page.textContent('[data-testid=confirm-dialog]'), /signing key/);
  await page.click('[data-testid=confirm-ok]');
  await page.waitForSelector('[data-testid=subscribers-table] >> text=http://127.0.0.1:9/console-hook');
  // The seeded subscriber was notified of the dismissal; the worker's
  // attempts (nothing listens there) appear in its log.
  const seeded = page.locator('[data-testid=subscribers-table] tr', {hasText: 'seeded-hook'});
  for (let i = 0; ; i++) {
    await seeded.locator('button:has-text("Deliveries")').click();
    await page.waitForSelector('[data-testid=delivery-log] h3');
    if (await page.$('[data-testid=delivery-log] table')) break;
    assert.ok(i < 30, 'a delivery of the dismissed alert appears in the log');
    await page.waitForTimeout(500);
  }
  const logText = await page.textContent('[data-testid=delivery-log] table');
  assert.match(logText, /product-alert/);
  await shot(page, '06-webhooks');
  await page.context().close();
}

async function overview() {
  const page = await newPage();
  log('an OVERVIEW user sees no action buttons');
  await logIn(page, env('CONSOLE_OVERVIEW'), env('CONSOLE_OVERVIEW_PASSWORD'));
  await page.goto(`${BASE}/console#/unit/${UNIT}`);
  await page.waitForSelector('[data-testid=no-actions]');
  assert.equal(await page.$$eval('main button[data-action]', (b) => b.length), 0);
  await page.waitForSelector('[data-testid=chart-voltage][data-rendered]');
  await shot(page, '07-unit-overview');
  await page.click('nav a[href="#/alerts"]');
  await page.check('main input[type=checkbox]');
  await page.waitForSelector('[data-testid=alerts-table] >> text=checked by phone');
  assert.equal(await page.$$eval('button[data-action=dismiss]', (b) => b.length), 0);
  await page.click('nav a[href="#/dead-letters"]');
  await page.waitForSelector('[data-testid=dead-letters-table] button[data-action=decode]');
  assert.equal(await page.$$eval('button[data-action=discard], button[data-action=replay]', (b) => b.length), 0);
  await page.click('nav a[href="#/webhooks"]');
  await page.waitForSelector('[data-testid=subscribers-table]');
  assert.equal(await page.$$eval('[data-testid=subscribe-form]', (f) => f.length), 0);
  await page.context().close();
}

async function entityUser() {
  const page = await newPage();
  log('an ENTITY user sees only its units');
  await logIn(page, env('CONSOLE_ENTITY'), env('CONSOLE_ENTITY_PASSWORD'));
  assert.match(await page.textContent('[data-testid=who]'), /TECHNICAL · ENTITY/);
  const rows = await page.$$eval('[data-testid=fleet-table] tbody tr a.imei', (els) => els.map((e) => e.textContent));
  assert.deepEqual(rows, [UNIT]);
  assert.equal(await page.textContent('[data-testid=count-filtered]'), '1');
  assert.deepEqual(await page.$$eval('circle.unit-dot', (els) => els.map((e) => e.dataset.imei)), [UNIT]);
  await shot(page, '08-fleet-entity');
  // TECHNICAL may disable but not change state (ADMIN) or send a wakeup (ADMIN).
  await page.goto(`${BASE}/console#/unit/${UNIT}`);
  await page.waitForSelector('button[data-action=disable]');
  assert.equal(await page.$$eval('button[data-action=change_state], button[data-action=send_wakeup]', (b) => b.length), 0);
  // Dead letters are refused to ENTITY users: a letter's unit may be another entity's, or
  // unknown (issue 17). The page says so instead of listing anything.
  await page.click('nav a[href="#/dead-letters"]');
  await page.waitForSelector('[data-testid=page-error]');
  assert.match(await page.textContent('[data-testid=page-error]'), /rtc_dead_letter/);
  assert.equal(await page.$$eval('[data-testid=dead-letters-table], button[data-action=decode]', (b) => b.length), 0);
  log('the other entity\'s unit is not found');
  await page.goto(`${BASE}/console#/unit/${OTHER}`);
  await page.waitForSelector('[data-testid=page-error]');
  assert.match(await page.textContent('[data-testid=page-error]'), /No unit .* among the units you can see/);
  await page.context().close();
}

async function tiles() {
  const page = await newPage();
  log('with a tile server configured, the fleet is a Leaflet map');
  await logIn(page, env('CONSOLE_ADMIN'), env('CONSOLE_ADMIN_PASSWORD'));
  await page.waitForSelector('[data-testid=tile-map] img.leaflet-tile-loaded');
  const tileSources = await page.$$eval('img.leaflet-tile', (imgs) => imgs.map((i) => i.src));
  assert.ok(tileSources.length > 0 && tileSources.every((src) => src.startsWith(TILES)), tileSources.join(' '));
  // One circle marker per located unit.
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=tile-map] path.leaflet-interactive').length === 2);
  assert.equal(await page.$$eval('[data-testid=coordinate-plot]', (e) => e.length), 0);
  // A marker's tooltip is its IMEI, as text.
  await page.hover('[data-testid=tile-map] path.leaflet-interactive');
  const tooltip = await page.waitForSelector('.leaflet-tooltip span');
  assert.match(await tooltip.textContent(), /^\d{15}$/);
  await shot(page, '09-fleet-tiles');
  await page.context().close();
}

let failed = false;
try {
  if (SCENARIO === 'tiles') {
    await tiles();
  } else {
    await admin();
    await overview();
    await entityUser();
  }
  assert.deepEqual(jsErrors, [], 'no uncaught errors in the pages');
  console.log(`console e2e: all checks passed; screenshots in ${SHOTS}`);
} catch (e) {
  failed = true;
  console.error(`console e2e FAILED at step "${step}": ${e.stack || e}`);
  if (jsErrors.length) console.error(`page errors: ${jsErrors.join('\n')}`);
  if (current && !current.isClosed()) await shot(current, 'failure').catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
