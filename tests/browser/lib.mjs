// Helpers of the dashboard's browser tests: the environment scripts/browser-test sets, the
// API as the tests call it themselves, Chromium, and polling.

import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const NAMES = [
  'RMK_BASE',
  'RMK_TENANT',
  'RMK_READ_KEY',
  'RMK_WRITE_KEY',
  'RMK_OTHER_TENANT',
  'RMK_OTHER_READ_KEY',
  'RMK_SCREENSHOTS',
];

/** The environment of scripts/browser-test; throws naming whatever is missing. */
export function environment() {
  const missing = NAMES.filter((n) => !process.env[n]);
  if (missing.length) {
    throw new Error(
      `missing environment variable(s) ${missing.join(', ')}: run the browser tests through scripts/browser-test, which starts the server and sets them`,
    );
  }
  const e = Object.fromEntries(NAMES.map((n) => [n, process.env[n]]));
  return {
    base: e.RMK_BASE.replace(/\/+$/, ''),
    tenant: Number(e.RMK_TENANT),
    readKey: e.RMK_READ_KEY,
    writeKey: e.RMK_WRITE_KEY,
    otherTenant: Number(e.RMK_OTHER_TENANT),
    otherReadKey: e.RMK_OTHER_READ_KEY,
    screenshots: e.RMK_SCREENSHOTS,
  };
}

/** Calls the API with a read key ({ key }) or a share token ({ share }). */
export async function api(env, path, { key, share, method = 'GET', query = {}, body } = {}) {
  const url = new URL(`${env.base}/api/v1/${path}`);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
  const headers = { Accept: 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (share) headers.Authorization = `Share ${share}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(15_000),
  });
  const text = await response.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: response.status, body: json, text };
}

/** GET that must answer 200. */
export async function get(env, path, options) {
  const r = await api(env, path, options);
  assert.equal(r.status, 200, `GET ${path}: ${r.status} ${r.text}`);
  return r.body;
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.RMK_CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/**
 * A fresh context (own sessionStorage) whose pages may reach the server under test only:
 * anything else is refused and recorded, and a test can assert that nothing was.
 */
export async function newContext(browser, env, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(20_000);
  const origin = new URL(env.base).origin;
  context.foreign = [];
  context.consoleErrors = [];
  await context.route(
    (url) => url.origin !== origin && url.protocol !== 'data:' && url.protocol !== 'blob:',
    (route) => {
      context.foreign.push(route.request().url());
      return route.abort();
    },
  );
  context.on('page', (page) => watchConsole(context, page));
  return context;
}

function watchConsole(context, page) {
  page.on('pageerror', (e) => context.consoleErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') context.consoleErrors.push(`console: ${m.text()}`);
  });
}

export function pageUrl(env, query = '', hash = '') {
  return `${env.base}/api/dashboard/${query}${hash}`;
}

/** Opens the dashboard and signs in with `key`; resolves when the widgets have data. */
export async function signIn(page, env, key, query = '') {
  await page.goto(pageUrl(env, query));
  await page.getByTestId('signin-key').fill(key);
  await page.getByTestId('signin-submit').click();
  await loaded(page);
}

/** Waits until every widget has drawn an answer (or an error) once. */
export async function loaded(page, timeout = 30_000) {
  await page.getByTestId('grid').waitFor({ timeout });
  await page.waitForFunction(
    () => {
      const widgets = document.querySelectorAll('[data-testid="widget"]');
      const busy = document.querySelectorAll('[data-testid="widget"] .widget-body[aria-busy="true"]');
      const updated = document.querySelector('[data-testid="updated-ago"]');
      return widgets.length > 0 && busy.length === 0 && updated?.dataset.seconds !== '';
    },
    null,
    { timeout, polling: 100 },
  );
}

/** The raw value of a KPI tile (its data-value), as a number. */
export async function kpi(page, metric) {
  const v = await page.locator(`[data-testid="kpi-value"][data-metric="${metric}"]`).first().getAttribute('data-value');
  return v === null ? NaN : Number(v);
}

/** Polls `check` (which returns truthy when satisfied) until it holds or `timeout` ms pass. */
export async function until(what, check, { timeout = 30_000, interval = 250 } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** The wall clock of `zone` at `ms` as `YYYY-MM-DDTHH:MM` (what a datetime-local input holds). */
export function wallClock(ms, zone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-GB', {
      timeZone: zone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    })
      .formatToParts(new Date(ms))
      .map((p) => [p.type, p.value]),
  );
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour === '24' ? '00' : parts.hour}:${parts.minute}`;
}

/** A fixed range, whole hours, ending in the next hour: its reports do not drift while a test runs. */
export function fixedRange(days) {
  const hour = 3_600_000;
  const to = Math.ceil(Date.now() / hour) * hour + hour;
  const from = to - days * 24 * hour;
  const iso = (ms) => new Date(ms).toISOString().replace('.000Z', 'Z');
  return { from: iso(from), to: iso(to) };
}

export const METRICS = ['events', 'unique_devices', 'revenue', 'conversion_rate'];
