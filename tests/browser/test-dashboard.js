// SPDX-License-Identifier: MIT
// The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) against a running smpgwd with a simulated fleet. Started
// by test-browser.py, which passes SMPGW (base URL), TOKEN, DEVICES (comma-
// separated ids), IMAGE (an MCUboot file) and PROFILE (a temp directory).
// Every wait is bounded. Prints TAP and a closing "N passed, N failed".
'use strict';

const { chromium } = require('playwright-core');

const BASE = process.env.SMPGW;
const TOKEN = process.env.TOKEN;
const DEVICES = (process.env.DEVICES || '').split(',').filter(Boolean);
const IMAGE = process.env.IMAGE;

let n = 0;
let failed = 0;
function check(cond, name) {
  n++;
  if (!cond) failed++;
  console.log(`${cond ? '' : 'not '}ok ${n} - ${name}`);
}

async function api(method, path, body) {
  const rsp = await fetch(BASE + '/api/v1' + path, {
    method,
    headers: { Authorization: 'Bearer ' + TOKEN, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await rsp.json(); } catch (e) { /* empty */ }
  return { status: rsp.status, data };
}

async function deviceList(page) {
  await page.waitForSelector('#devices tbody tr', { timeout: 15000 });
  return page.$$eval('#devices tbody tr', (rows) => rows.map((r) => r.getAttribute('data-id')));
}

async function testDeviceList(page) {
  await page.goto(BASE + '/', { timeout: 15000 });
  check((await page.title()) === 'smpgw', 'dashboard loads');
  const ids = await deviceList(page);
  check(DEVICES.every((d) => ids.includes(d)) && ids.length === DEVICES.length,
    `lists the ${DEVICES.length} devices (${ids.join(', ')})`);
  const links = await page.$$eval('#devices tbody .badge.link', (b) => b.map((x) => x.textContent));
  check(links.length === DEVICES.length && links.every((l) => ['down', 'connecting', 'up'].includes(l)),
    'link state shown: ' + links.join(', '));
  const cols = await page.$$eval('#devices thead th', (h) => h.map((x) => x.textContent));
  check(['Link', 'RSSI', 'Firmware'].every((c) => cols.includes(c)), 'link state, RSSI and firmware columns');
}

async function testLiveUpdate(page) {
  // The stream comes up, then a request to a device makes its link come up:
  // the table follows without a reload.
  await page.waitForFunction(() => document.querySelector('#stream').textContent === 'live',
    null, { timeout: 15000 });
  check(true, 'event stream connected');
  const id = DEVICES[0];
  const rsp = await api('POST', `/devices/${encodeURIComponent(id)}/image-state/confirm`, {});
  check(rsp.status === 200 || rsp.status === 422, `request to ${id} answered (${rsp.status})`);
  const up = await page.waitForFunction((dev) => {
    const row = document.querySelector(`#devices tr[data-id="${dev}"] .badge.link`);
    return row && row.textContent === 'up';
  }, id, { timeout: 15000 }).then(() => true, () => false);
  check(up, `${id} shows link up from the live event stream`);
  const logged = await page.$$eval('#events li', (l) => l.map((x) => x.textContent).join('\n'));
  check(/device\./.test(logged), 'device events appear in the event log');
}

async function testUpload(page) {
  await page.fill('#token', TOKEN);
  await page.click('#token-form button');
  await page.setInputFiles('#upload-file', IMAGE);
  await page.click('#upload-form button');
  const ok = await page.waitForFunction(() => /^(Stored|Already stored)/.test(
    document.querySelector('#upload-status').textContent), null, { timeout: 20000 }).then(() => true, () => false);
  check(ok, 'image upload from the page: ' + await page.textContent('#upload-status'));
  check(await page.$eval('#upload-progress', (p) => p.value) === 100, 'upload progress bar reaches 100');
  const versions = await page.$$eval('#images tbody tr td:first-child', (t) => t.map((x) => x.textContent));
  check(versions.length >= 1, 'image listed: ' + versions.join(', '));
  const opts = await page.$$eval('#update-image option', (o) => o.length);
  check(opts >= 1, 'image offered for update');
}

async function testUpdate(page) {
  // The update route comes with the upload engine; until then this part is
  // skipped (reported, not failed).
  const probe = await api('POST', '/devices/' + encodeURIComponent(DEVICES[0]) + '/update', {});
  if (probe.status === 404 && probe.data && /no resource/.test(probe.data.detail || '')) {
    console.log('ok ' + (++n) + ' - update from the page # SKIP no /devices/{id}/update route yet');
    return;
  }
  const id = DEVICES[0];
  await page.check(`#devices tr[data-id="${id}"] input.sel`);
  await page.selectOption('#update-mode', 'test-confirm');
  await page.click('#update-form button');
  const started = await page.waitForSelector(`#devices tr[data-id="${id}"] progress.job-progress`,
    { timeout: 15000 }).then(() => true, () => false);
  check(started, 'update started from the page shows a progress bar');
  const done = await page.waitForFunction((dev) => {
    const b = document.querySelector(`#devices tr[data-id="${dev}"] .job .badge`);
    return b && /done|failed|rolled_back|lost|canceled/.test(b.textContent);
  }, id, { timeout: 90000 }).then(() => true, () => false);
  const result = await page.textContent(`#devices tr[data-id="${id}"] .job .badge`).catch(() => '');
  check(done && /done/.test(result), 'update ends: ' + result);
  await page.waitForFunction((dev) => {
    const td = document.querySelector(`#devices tr[data-id="${dev}"] td.fw`);
    return td && td.textContent.startsWith('1.2.3');
  }, id, { timeout: 10000 }).catch(() => {});
  const fw = await page.textContent(`#devices tr[data-id="${id}"] td.fw`);
  check(fw && fw.startsWith('1.2.3'), 'firmware column shows the new version: ' + fw);
  await page.reload({ timeout: 15000 });
  const kept = await page.waitForFunction((dev) => {
    const b = document.querySelector(`#devices tr[data-id="${dev}"] .job .badge`);
    return b && b.textContent === 'done';
  }, id, { timeout: 10000 }).then(() => true, () => false);
  check(kept, 'the finished job is shown again after a reload');
}

async function main() {
  const ctx = await chromium.launchPersistentContext(process.env.PROFILE, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    timeout: 30000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => { if (!r.url().startsWith(BASE)) errors.push('external request: ' + r.url()); });
  try {
    await testDeviceList(page);
    await testLiveUpdate(page);
    await testUpload(page);
    await testUpdate(page);
  } catch (e) {
    check(false, 'unexpected: ' + e.message);
  } finally {
    check(errors.length === 0, 'no page errors, no requests outside the daemon ' + errors.join('; '));
    await ctx.close();
  }
  console.log(`1..${n}`);
  console.log(`${n - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

const guard = setTimeout(() => { console.log('not ok - timed out'); process.exit(1); }, 170000);
guard.unref();
main();
