// The dashboard in a real browser (Debian's Chromium through playwright-core), against the
// server scripts/browser-test starts: devhost, the handler, and a seeded database of two
// tenants. Every figure the tests check is fetched from the API by the test itself.
//
// The tests run in this order and share the server: 3 saves tenant 1's "main" dashboard
// (later tests find its widgets by kind, not by position), 5 posts events.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  METRICS,
  api,
  environment,
  fixedRange,
  get,
  kpi,
  launch,
  loaded,
  newContext,
  pageUrl,
  signIn,
  until,
  wallClock,
} from './lib.mjs';

let env;
let browser;
let contexts = [];

async function context(options) {
  const c = await newContext(browser, env, options);
  contexts.push(c);
  return c;
}

/** The page may not have talked to anything but the server under test, nor thrown. */
function assertClean(c) {
  assert.deepEqual(c.foreign, [], 'the page tried to reach another origin');
  assert.deepEqual(
    c.consoleErrors.filter((e) => !/Failed to load resource: the server responded with a status of (401|403|404|409)/.test(e)),
    [],
    'the page logged errors',
  );
}

/** Buttons, selects, inputs and text areas on show without an accessible name. */
function unnamedControls(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('button, select, input, textarea')]
      .filter((el) => !el.closest('[hidden]'))
      .filter((el) => {
        const labelled = el.labels?.length || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
        return !labelled && !(el.tagName === 'BUTTON' && el.textContent.trim());
      })
      .map((el) => el.outerHTML.slice(0, 120)),
  );
}

const summaryOf = (query, credential) => get(env, `tenants/${env.tenant}/summary`, { ...credential, query });

before(async () => {
  env = environment();
  mkdirSync(env.screenshots, { recursive: true });
  browser = await launch();
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
});

describe('the dashboard', { timeout: 600_000 }, () => {
  test('1. sign in with the key: KPI tiles equal the API summary', { timeout: 120_000 }, async () => {
    const c = await context();
    const page = await c.newPage();
    // A wrong key is refused with the server's message, on the sign-in form.
    await page.goto(pageUrl(env));
    await page.getByTestId('signin-key').fill('rmk_read_not-a-key');
    await page.getByTestId('signin-submit').click();
    await page.getByTestId('signin-error').filter({ hasText: /credential/ }).waitFor();
    await signIn(page, env, env.readKey);
    const me = await get(env, 'whoami', { key: env.readKey });
    assert.equal(me.tenant_id, env.tenant);
    await page.getByTestId('tenant-name').filter({ hasText: me.tenant_name }).waitFor();

    // The default range (last 24 h) slides with the clock: compare until one refresh and one
    // API call see the same window.
    await until('KPI tiles equal to the 24 h summary', async () => {
      const page24 = Object.fromEntries(await Promise.all(METRICS.map(async (m) => [m, await kpi(page, m)])));
      const s = await summaryOf({ range: '24h' }, { key: env.readKey });
      return METRICS.every((m) => Number(s.current[m]) === page24[m]) || { page: page24, api: s.current };
    });

    // A custom range, typed in the tenant's time zone.
    const zone = me.time_zone;
    const hour = 3_600_000;
    const typedFrom = wallClock(Math.floor((Date.now() - 3 * 24 * hour) / hour) * hour, zone);
    const typedTo = wallClock(Math.floor((Date.now() - 2 * hour) / hour) * hour, zone);
    await page.getByTestId('range-select').selectOption('custom');
    await page.getByTestId('range-zone').filter({ hasText: zone }).waitFor();
    await page.getByTestId('range-from').fill(typedFrom);
    await page.getByTestId('range-to').fill(typedTo);
    await page.getByTestId('range-apply').click();
    await until('from/to in the address', () => new URL(page.url()).searchParams.get('from'));
    const url = new URL(page.url());
    const from = url.searchParams.get('from');
    const to = url.searchParams.get('to');
    assert.equal(url.searchParams.get('range'), null);
    // The instants in the address show, in the tenant's zone, what was typed.
    assert.equal(wallClock(Date.parse(from), zone), typedFrom);
    assert.equal(wallClock(Date.parse(to), zone), typedTo);
    const expected = await summaryOf({ from, to }, { key: env.readKey });
    assert.ok(expected.current.events > 0, 'the seeded tenant has events in the custom range');
    await until('KPI tiles of the custom range', async () => {
      const q = await page.locator('[data-testid="widget"][data-kind="kpi"]').first().getAttribute('data-query');
      return q && new URLSearchParams(q).get('from') === from;
    });
    for (const m of METRICS) {
      assert.equal(await kpi(page, m), Number(expected.current[m]), `KPI ${m}`);
    }
    // The tile shows the figure, formatted, and the change against the period before.
    const shown = await page.locator('[data-testid="kpi-value"][data-metric="events"]').first().innerText();
    assert.equal(shown.replace(/\D/g, ''), String(expected.current.events));
    const change = await page.locator('[data-testid="widget"][data-kind="kpi"]').first().getByTestId('kpi-change').innerText();
    assert.match(change, /previous period/);
    // Distinct counts carry their error bound; top lists say they are estimates.
    const bound = `± ${(expected.distinct_counts.relative_error_95 * 100).toFixed(1)} %`;
    assert.ok(
      (await page.locator('[data-testid="kpi-value"][data-metric="unique_devices"]').first().innerText()).includes(bound),
      `unique devices show ${bound}`,
    );
    assert.match(await page.getByTestId('top-estimated').first().innerText(), /estimate/);
    // The breakdown rows are the API's, in its order.
    const countries = await get(env, `tenants/${env.tenant}/breakdown`, {
      key: env.readKey,
      query: { from, to, dimension: 'country', limit: 10 },
    });
    const rows = page.locator('[data-testid="breakdown-row"][data-dimension="country"]');
    await until('country rows of the custom range', async () => (await rows.count()) === countries.rows.length);
    assert.deepEqual(
      await rows.evaluateAll((els) => els.map((e) => e.dataset.value)),
      countries.rows.map((r) => r.value),
    );
    assertClean(c);
  });

  test('2. a country in the breakdown filters every widget, in the address too', { timeout: 120_000 }, async () => {
    const c = await context();
    const page = await c.newPage();
    const range = fixedRange(7);
    await signIn(page, env, env.readKey, `?from=${range.from}&to=${range.to}`);
    const requests = [];
    page.on('request', (r) => {
      if (/\/api\/v1\/tenants\/\d+\/(summary|timeseries|breakdown|top)\?/.test(r.url())) requests.push({ at: Date.now(), url: new URL(r.url()) });
    });
    const row = page.locator('[data-testid="breakdown-row"][data-dimension="country"]:not([data-value=""])').first();
    const country = await row.getAttribute('data-value');
    assert.ok(country, 'a country to click');
    const unfiltered = await summaryOf(range, { key: env.readKey });
    const filtered = await summaryOf({ ...range, country }, { key: env.readKey });
    assert.ok(filtered.current.events < unfiltered.current.events, 'the filter narrows the figures');

    const clickedAt = Date.now();
    await row.click();
    await until(`KPI events of country ${country}`, async () => (await kpi(page, 'events')) === filtered.current.events);
    await loaded(page);
    // The address carries the filter (and the range); a chip shows it.
    assert.equal(new URL(page.url()).searchParams.get('country'), country);
    assert.equal(new URL(page.url()).searchParams.get('from'), range.from);
    await page.locator(`[data-testid="filter-chip"][data-dimension="country"][data-value="${country}"]`).waitFor();
    // Every report widget drew an answer to a request with the filter (ingest has no dimensions).
    const queries = await page.locator('[data-testid="widget"]').evaluateAll((els) => els.map((e) => [e.dataset.kind, e.dataset.query]));
    assert.ok(queries.length >= 5);
    for (const [kind, q] of queries) {
      // The ledger has no dimensions; campaign figures cannot be filtered by country.
      if (kind === 'ingest' || kind === 'campaigns') continue;
      assert.equal(new URLSearchParams(q).get('country'), country, `${kind} widget drawn with the filter: ${q}`);
    }
    await page.locator('[data-testid="widget"][data-kind="campaigns"]').getByTestId('campaigns-unavailable').filter({ hasText: /country/ }).waitFor();
    // And each report the page asked for after the click had it.
    const after = requests.filter((r) => r.at >= clickedAt);
    assert.deepEqual(new Set(after.map((r) => r.url.pathname.split('/').pop())), new Set(['summary', 'timeseries', 'breakdown', 'top']));
    for (const r of after) assert.equal(r.url.searchParams.get('country'), country, r.url.href);
    for (const m of METRICS) assert.equal(await kpi(page, m), Number(filtered.current[m]), `filtered KPI ${m}`);

    // A reload keeps it.
    await page.reload();
    await loaded(page);
    assert.equal(new URL(page.url()).searchParams.get('country'), country);
    await page.locator(`[data-testid="filter-chip"][data-value="${country}"]`).waitFor();
    assert.equal(await kpi(page, 'events'), filtered.current.events);
    assert.equal(
      await page.locator(`[data-testid="breakdown-row"][data-dimension="country"][data-value="${country}"]`).getAttribute('aria-pressed'),
      'true',
    );

    // Removing the chip removes the filter; Back brings it again.
    await page.getByTestId('filter-chip-remove').click();
    await until('unfiltered KPI events', async () => (await kpi(page, 'events')) === unfiltered.current.events);
    assert.equal(new URL(page.url()).searchParams.get('country'), null);
    await page.goBack();
    await until('the filter again after Back', async () => (await kpi(page, 'events')) === filtered.current.events);
    assert.equal(new URL(page.url()).searchParams.get('country'), country);
    assertClean(c);
  });

  test('3. a changed layout is saved for the tenant only', { timeout: 150_000 }, async () => {
    const c = await context();
    const page = await c.newPage();
    await signIn(page, env, env.readKey, '?range=7d');
    const widgets = page.locator('[data-testid="widget"]');
    const before = await widgets.evaluateAll((els) => els.map((e) => e.dataset.widgetId));
    assert.ok(before.length >= 5);
    const removed = before.find((id) => id === 'top-devices') ?? before[before.length - 1];
    const resized = before.find((id) => id === 'ts-events') ?? before[before.length - 2];

    await page.getByTestId('edit-toggle').click();
    await page.getByTestId('edit-bar').waitFor();
    await page.locator(`[data-widget-id="${removed}"]`).getByTestId('widget-remove').click();
    await page.locator(`[data-widget-id="${resized}"]`).getByTestId('widget-width').selectOption('4');
    await page.locator(`[data-widget-id="${resized}"]`).getByTestId('widget-height').selectOption('3');
    await page.getByTestId('add-widget-kind').selectOption('breakdown');
    await page.getByTestId('add-widget').click();
    const added = widgets.last();
    const addedId = await added.getAttribute('data-widget-id');
    assert.ok(addedId && !before.includes(addedId), 'a new widget');
    await added.getByTestId('widget-dimension').selectOption('campaign');
    await added.getByTestId('widget-metric').selectOption('revenue');
    await page.locator(`[data-widget-id="${addedId}"]`).getByTestId('widget-move-earlier').click();
    await page.locator(`[data-widget-id="${addedId}"]`).getByTestId('widget-title-input').fill('Campaigns (browser test)');
    const expected = await widgets.evaluateAll((els) => els.map((e) => e.dataset.widgetId));
    assert.equal(expected.at(-2), addedId);
    await page.getByTestId('layout-save').click();
    await page.getByTestId('edit-bar').waitFor({ state: 'hidden' });

    // The server has it.
    const saved = (await get(env, `tenants/${env.tenant}/dashboards`, { key: env.readKey })).dashboards.find((d) => d.name === 'main');
    assert.ok(saved, 'main is saved');
    assert.deepEqual(saved.layout.widgets.map((w) => w.id), expected);
    const savedAdded = saved.layout.widgets.find((w) => w.id === addedId);
    assert.deepEqual(
      { kind: savedAdded.kind, dimension: savedAdded.dimension, metric: savedAdded.metric, title: savedAdded.title },
      { kind: 'breakdown', dimension: 'campaign', metric: 'revenue', title: 'Campaigns (browser test)' },
    );
    assert.deepEqual(
      (({ width, height }) => ({ width, height }))(saved.layout.widgets.find((w) => w.id === resized)),
      { width: 4, height: 3 },
    );

    // A reload draws the saved layout; the campaign widget asks for values ranked by revenue.
    const campaignRequests = [];
    page.on('request', (r) => {
      const url = new URL(r.url());
      if (url.pathname.endsWith('/breakdown') && url.searchParams.get('dimension') === 'campaign') campaignRequests.push(url);
    });
    await page.reload();
    await loaded(page);
    assert.deepEqual(await widgets.evaluateAll((els) => els.map((e) => e.dataset.widgetId)), expected);
    assert.match((await page.locator(`[data-widget-id="${resized}"]`).getAttribute('class')) ?? '', /\bw4\b.*\bh3\b/);
    await page.locator(`[data-widget-id="${addedId}"]`).getByText('Campaigns (browser test)').waitFor();
    await page.locator(`[data-widget-id="${addedId}"] [data-testid="breakdown-row"][data-dimension="campaign"]`).first().waitFor();
    assert.ok(campaignRequests.length > 0, 'the campaign widget asked for its breakdown');
    const asked = campaignRequests.at(-1);
    assert.equal(asked.searchParams.get('order'), 'revenue');
    const byRevenue = await get(env, `tenants/${env.tenant}/breakdown`, {
      key: env.readKey,
      query: Object.fromEntries(asked.searchParams),
    });
    const campaignRows = page.locator(`[data-widget-id="${addedId}"] [data-testid="breakdown-row"][data-dimension="campaign"]`);
    const shownValues = () => campaignRows.evaluateAll((els) => els.map((e) => e.dataset.value));
    await until('campaign rows ranked by revenue', async () => (await shownValues()).length === byRevenue.rows.length);
    assert.deepEqual(await shownValues(), byRevenue.rows.map((r) => r.value));

    // Someone else saves meanwhile: this page's save is refused, and it can load theirs.
    await page.getByTestId('edit-toggle').click();
    await page.locator(`[data-widget-id="${resized}"]`).getByTestId('widget-width').selectOption('2');
    const theirs = await api(env, `tenants/${env.tenant}/dashboards/main`, {
      key: env.readKey,
      method: 'PUT',
      body: { title: 'Main (changed elsewhere)', layout: saved.layout, expected_version: saved.version },
    });
    assert.equal(theirs.status, 200, theirs.text);
    await page.getByTestId('layout-save').click();
    await page.getByTestId('conflict').waitFor();
    await page.getByTestId('conflict-load').click();
    await page.getByTestId('dashboard-title').filter({ hasText: 'Main (changed elsewhere)' }).waitFor();
    assert.match((await page.locator(`[data-widget-id="${resized}"]`).getAttribute('class')) ?? '', /\bw4\b/);
    const restored = await api(env, `tenants/${env.tenant}/dashboards/main`, {
      key: env.readKey,
      method: 'PUT',
      body: { title: 'Main', layout: saved.layout, expected_version: theirs.body.version },
    });
    assert.equal(restored.status, 200, restored.text);

    // Named dashboards: make one, switch to it through the address, delete it.
    await page.getByTestId('new-dashboard').click();
    await page.getByTestId('new-dashboard-name').fill('browser-extra');
    await page.getByTestId('new-dashboard-title').fill('Extra (browser test)');
    await page.getByTestId('new-dashboard-create').click();
    await page.getByTestId('dashboard-title').filter({ hasText: 'Extra (browser test)' }).waitFor();
    assert.equal(new URL(page.url()).searchParams.get('dashboard'), 'browser-extra');
    const names = async () => (await get(env, `tenants/${env.tenant}/dashboards`, { key: env.readKey })).dashboards.map((d) => d.name).sort();
    assert.deepEqual(await names(), ['browser-extra', 'main']);
    await page.reload();
    await loaded(page);
    await page.getByTestId('dashboard-title').filter({ hasText: 'Extra (browser test)' }).waitFor();
    await page.getByTestId('dashboard-select').selectOption('main');
    await page.getByTestId('dashboard-title').filter({ hasText: /^Main$/ }).waitFor();
    await page.getByTestId('dashboard-select').selectOption('browser-extra');
    await page.getByTestId('delete-dashboard').click();
    await page.getByTestId('delete-dashboard-yes').click();
    await until('the dashboard deleted', async () => (await names()).join() === 'main');
    await page.getByTestId('dashboard-title').filter({ hasText: /^Main$/ }).waitFor();
    assert.equal(new URL(page.url()).searchParams.get('dashboard'), null);

    // The other tenant does not see it: its list lacks it, its page shows the default layout.
    const otherList = (await get(env, `tenants/${env.otherTenant}/dashboards`, { key: env.otherReadKey })).dashboards;
    assert.ok(!otherList.some((d) => d.layout.widgets.some((w) => w.id === addedId)));
    const denied = await api(env, `tenants/${env.tenant}/dashboards`, { key: env.otherReadKey });
    assert.equal(denied.status, 404, 'another tenant’s dashboards are not found');
    const other = await (await context()).newPage();
    await signIn(other, env, env.otherReadKey, '?range=7d');
    const otherIds = await other.locator('[data-testid="widget"]').evaluateAll((els) => els.map((e) => e.dataset.widgetId));
    assert.ok(!otherIds.includes(addedId), 'the other tenant has no such widget');
    assert.ok(otherIds.includes(removed), 'the other tenant still has the widget tenant 1 removed');
    assert.match((await other.locator(`[data-widget-id="${resized}"]`).getAttribute('class')) ?? '', /\bw2\b/);
    assertClean(c);
  });

  test('4. a share link: read-only view, embed, revocation', { timeout: 150_000 }, async () => {
    const c = await context();
    const page = await c.newPage();
    const range = fixedRange(7);
    await signIn(page, env, env.readKey, `?from=${range.from}&to=${range.to}`);
    const row = page.locator('[data-testid="breakdown-row"][data-dimension="country"]:not([data-value=""])').first();
    const country = await row.getAttribute('data-value');
    await row.click();
    await page.locator(`[data-testid="filter-chip"][data-value="${country}"]`).waitFor();

    await page.getByTestId('share-toggle').click();
    const panel = page.getByTestId('share-panel');
    await panel.waitFor();
    const fixed = panel.locator(`[data-testid="share-fixed-filter"][data-dimension="country"]`);
    assert.equal(await fixed.isChecked(), true, 'the current filter is fixed by default');
    await panel.getByTestId('share-expiry').selectOption({ label: '1 day' });
    await panel.getByTestId('share-label').fill('browser test');
    await panel.getByTestId('share-create').click();
    const link = await until('a share link', async () => panel.getByTestId('share-link').inputValue());
    const snippet = await panel.getByTestId('share-iframe').inputValue();
    const token = new URLSearchParams(new URL(link).hash.slice(1)).get('share');
    assert.match(token ?? '', /^rms_/);
    assert.ok(link.startsWith(`${env.base}/api/dashboard/`), link);
    assert.match(snippet, /^<iframe src="[^"]+\/api\/dashboard\/embed\?[^"]*#share=rms_/);
    const listed = panel.locator('[data-testid="share-row"][data-status="active"]').filter({ hasText: 'browser test' });
    await listed.waitFor();

    // A fresh browser opens the link: the numbers of the fixed filter, and nothing to edit.
    const expected = await summaryOf({ ...range, country }, { key: env.readKey });
    const viewerContext = await context();
    const viewer = await viewerContext.newPage();
    await viewer.goto(link);
    await loaded(viewer);
    await viewer.getByTestId('share-banner').filter({ hasText: /Shared view.*expires/ }).waitFor();
    await viewer.screenshot({ path: join(env.screenshots, 'shared-view-desktop.png') });
    assert.equal(await kpi(viewer, 'events'), expected.current.events);
    assert.equal(await kpi(viewer, 'revenue'), Number(expected.current.revenue));
    await viewer.locator('[data-testid="filter-chip"][data-fixed="true"][data-dimension="country"]').waitFor();
    for (const id of ['edit-toggle', 'share-toggle', 'sign-out', 'new-dashboard', 'delete-dashboard', 'filter-chip-remove']) {
      assert.equal(await viewer.getByTestId(id).count(), 0, `no ${id} in the shared view`);
    }
    assert.equal(await viewer.locator(`[data-testid="breakdown-row"][data-dimension="country"]`).first().isDisabled(), true);
    // The token cannot write, from the page's origin or anywhere.
    const put = await viewer.evaluate(
      async ([t, tenant]) =>
        (
          await fetch(`../v1/tenants/${tenant}/dashboards/main`, {
            method: 'PUT',
            headers: { Authorization: `Share ${t}`, 'Content-Type': 'application/json' },
            body: JSON.stringify({ title: 'x', layout: { widgets: [] } }),
          })
        ).status,
      [token, env.tenant],
    );
    assert.equal(put, 403);
    assert.equal((await api(env, `tenants/${env.tenant}/share-tokens`, { share: token })).status, 403);

    // The embed page, directly and inside a page of the same origin.
    const embed = await viewerContext.newPage();
    const embedUrl = new URL(link);
    embedUrl.pathname = new URL(pageUrl(env, 'embed')).pathname;
    await embed.goto(embedUrl.href);
    await loaded(embed);
    assert.equal(await kpi(embed, 'events'), expected.current.events);
    assert.equal((await summaryOf(range, { share: token })).current.events, expected.current.events, 'the token’s own figures');
    assert.equal(await embed.getByTestId('dashboard-select').count(), 0);
    assert.equal(await embed.getByTestId('edit-toggle').count(), 0);
    const host = await viewerContext.newPage();
    await host.route(`${env.base}/__embed-host`, (route) =>
      route.fulfill({ contentType: 'text/html', body: `<!doctype html><title>host</title><h1>Partner page</h1>${snippet}` }),
    );
    await host.goto(`${env.base}/__embed-host`);
    const frame = host.frameLocator('iframe');
    await frame.locator('[data-testid="kpi-value"][data-metric="events"]').first().waitFor({ timeout: 30_000 });
    assert.equal(
      Number(await frame.locator('[data-testid="kpi-value"][data-metric="events"]').first().getAttribute('data-value')),
      expected.current.events,
    );

    // Revoked: the open view stops at its next refresh, and the link no longer opens.
    await listed.getByTestId('share-revoke').click();
    await panel.locator('[data-testid="share-row"][data-status="revoked"]').filter({ hasText: 'browser test' }).waitFor();
    await viewer.getByTestId('refresh-now').click();
    await viewer.getByTestId('fatal-error').filter({ hasText: /revoked/ }).waitFor();
    const again = await (await context()).newPage();
    await again.goto(link);
    await again.getByTestId('fatal-error').filter({ hasText: /revoked/ }).waitFor();
    assert.equal(await again.getByTestId('grid').count(), 0);
    assertClean(c);
  });

  test('5. new events appear without a reload', { timeout: 120_000 }, async () => {
    const c = await context();
    const page = await c.newPage();
    await signIn(page, env, env.readKey, '?range=1h&refresh=2');
    assert.equal(await page.getByTestId('refresh-select').inputValue(), '2');
    await page.evaluate(() => {
      window.__rmkMarker = 'still the same page';
    });
    let navigations = 0;
    page.on('framenavigated', (f) => {
      if (f === page.mainFrame()) navigations += 1;
    });
    const start = await kpi(page, 'events');
    const now = Date.now();
    const count = 7;
    const events = Array.from({ length: count }, (_, i) => ({
      tenant_id: env.tenant,
      event_type: i === 0 ? 'purchase' : 'page_view',
      event_time: new Date(now - i * 1000).toISOString(),
      device_id: `browser-test-device-${now}-${i % 3}`,
      session_id: `browser-test-session-${now}-${i % 3}`,
      country: 'DE',
      browser: 'Chromium',
      page_url: `https://shop.example/browser-test/${i}`,
      ...(i === 0 ? { revenue: '19.99', currency: 'EUR' } : {}),
    }));
    const sent = await fetch(`${env.base}/api/collect`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-rmk-write-key': env.writeKey },
      body: JSON.stringify(events),
      signal: AbortSignal.timeout(15_000),
    });
    assert.equal(sent.status, 202, await sent.text());
    const grown = await until(
      'KPI events to grow by the posted events',
      async () => {
        const v = await kpi(page, 'events');
        return v >= start + count ? v : false;
      },
      { timeout: 60_000, interval: 500 },
    );
    assert.ok(grown >= start + count);
    assert.equal(await page.evaluate(() => window.__rmkMarker), 'still the same page');
    assert.equal(navigations, 0, 'the page never navigated');
    assert.match(await page.getByTestId('updated-ago').innerText(), /Updated/);
    // Paused, it says so and stops refreshing; resumed, it goes on.
    await page.getByTestId('pause').click();
    assert.equal(await page.getByTestId('pause').getAttribute('aria-pressed'), 'true');
    await until('"paused"', async () => /paused/.test(await page.getByTestId('updated-ago').innerText()), { timeout: 5_000 });
    const pausedAt = await page.getByTestId('updated-ago').getAttribute('data-seconds');
    await page.waitForTimeout(3_000);
    assert.ok(Number(await page.getByTestId('updated-ago').getAttribute('data-seconds')) >= Number(pausedAt) + 2, 'no refresh while paused');
    await page.getByTestId('pause').click();
    await until('a refresh after resuming', async () => Number(await page.getByTestId('updated-ago').getAttribute('data-seconds')) < 2, { timeout: 10_000 });
    assertClean(c);
  });

  test('6. screenshots at desktop and phone width; labelled controls', { timeout: 120_000 }, async () => {
    for (const [name, viewport] of [
      ['desktop', { width: 1280, height: 900 }],
      ['phone', { width: 390, height: 844 }],
    ]) {
      const c = await context({ viewport, deviceScaleFactor: 1 });
      const page = await c.newPage();
      await signIn(page, env, env.readKey, '?range=7d');
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(env.screenshots, `dashboard-${name}.png`), fullPage: true });
      await page.screenshot({ path: join(env.screenshots, `dashboard-${name}-top.png`) });
      const lefts = await page.locator('[data-testid="widget"]').evaluateAll((els) => [...new Set(els.map((e) => Math.round(e.getBoundingClientRect().left)))]);
      if (name === 'phone') {
        assert.equal(lefts.length, 1, 'one column at phone width');
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
        assert.ok(overflow <= 0, `no horizontal scrolling (${overflow} px too wide)`);
      } else {
        assert.ok(lefts.length >= 3, 'several columns at desktop width');
      }
      // Every control has a name; charts have a summary.
      assert.deepEqual(await unnamedControls(page), []);
      const charts = await page.locator('.chart[role="img"]').evaluateAll((els) => els.map((e) => e.getAttribute('aria-label') ?? ''));
      assert.ok(charts.length > 0 && charts.every((l) => l.length > 20), 'charts have a summary');
      if (name === 'desktop') {
        await page.getByTestId('edit-toggle').click();
        await page.screenshot({ path: join(env.screenshots, 'dashboard-desktop-editing.png'), fullPage: true });
        assert.deepEqual(await unnamedControls(page), [], 'the editing tools are labelled');
        await page.getByTestId('layout-cancel').click();
        await page.getByTestId('share-toggle').click();
        await page.getByTestId('share-panel').screenshot({ path: join(env.screenshots, 'dashboard-desktop-share.png') });
      }
      assertClean(c);
    }
  });

  test('7. campaigns: the table is the campaign report per model, with spend; sorting; a campaign filters', { timeout: 150_000 }, async () => {
    const c = await context();
    const page = await c.newPage();
    const range = fixedRange(7);
    await signIn(page, env, env.readKey, `?from=${range.from}&to=${range.to}`);
    const widget = page.locator('[data-testid="widget"][data-kind="campaigns"]');
    const height = Number((/\bh(\d)\b/.exec((await widget.getAttribute('class')) ?? '') ?? [])[1]);
    const limit = height <= 1 ? 5 : height === 2 ? 10 : 16;
    const columns = ['impressions', 'clicks', 'ctr', 'reach', 'sessions', 'conversions', 'revenue', 'conversion_rate', 'cost', 'cpc', 'cpa', 'roas'];
    const table = () =>
      widget.locator('[data-testid="campaign-row"]').evaluateAll((els) =>
        els.map((tr) => ({
          key: [tr.dataset.campaign, tr.dataset.source, tr.dataset.medium].join('|'),
          cells: Object.fromEntries([...tr.querySelectorAll('td')].map((td) => [td.dataset.column, td.dataset.value])),
        })),
      );
    const revenueBy = {};
    for (const model of ['last_touch', 'first_touch', 'session']) {
      if (model !== 'last_touch') await widget.getByTestId('campaigns-model').selectOption(model);
      await until(`the campaigns widget under ${model}`, async () => new URLSearchParams((await widget.getAttribute('data-query')) ?? '').get('model') === model);
      const report = await get(env, `tenants/${env.tenant}/campaigns`, { key: env.readKey, query: { ...range, model, limit } });
      assert.ok(report.rows.length > 1, `campaign rows under ${model}`);
      assert.notEqual(report.totals.cost, null, 'the seeded tenant has ad spend in the range');
      const rows = await table();
      assert.deepEqual(rows.map((r) => r.key), report.rows.map((r) => [r.campaign, r.source, r.medium].join('|')), `rows under ${model}`);
      rows.forEach((r, i) => {
        for (const col of columns) {
          const v = report.rows[i][col];
          assert.equal(r.cells[col], v === null ? '' : String(v), `${model} ${r.key} ${col}`);
        }
      });
      const total = await widget.locator('[data-testid="campaigns-totals"] [data-column="revenue"]').getAttribute('data-value');
      assert.equal(total, String(report.totals.revenue));
      revenueBy[model] = Object.fromEntries(report.rows.map((r) => [[r.campaign, r.source, r.medium].join('|'), r.revenue]));
    }
    assert.notDeepEqual(revenueBy.last_touch, revenueBy.session, 'the models attribute revenue differently');

    // A column header sorts the rows by it, largest first; again, smallest first.
    const revenues = async () => (await table()).map((r) => Number(r.cells.revenue));
    const sortBy = widget.locator('[data-testid="campaigns-sort"][data-column="revenue"]');
    await sortBy.click();
    let shown = await revenues();
    assert.deepEqual(shown, [...shown].sort((a, b) => b - a));
    await widget.locator('[data-testid="campaigns-sort"][data-column="revenue"]').click();
    shown = await revenues();
    assert.deepEqual(shown, [...shown].sort((a, b) => a - b));
    assert.equal(await widget.locator('th[aria-sort="ascending"]').count(), 1);

    // A campaign's name filters the dashboard by it, the campaigns table too.
    const name = widget.locator('[data-testid="campaign-filter"]:not([data-value=""])').first();
    const campaign = await name.getAttribute('data-value');
    await name.click();
    await until('the campaign filter in the address', () => new URL(page.url()).searchParams.get('campaign') === campaign);
    await page.locator(`[data-testid="filter-chip"][data-dimension="campaign"][data-value="${campaign}"]`).waitFor();
    await until('only that campaign in the table', async () => {
      const keys = (await table()).map((r) => r.key.split('|')[0]);
      return keys.length > 0 && keys.every((k) => k === campaign);
    });
    const filteredKpi = await summaryOf({ ...range, campaign }, { key: env.readKey });
    await until('KPI events of the campaign', async () => (await kpi(page, 'events')) === filteredKpi.current.events);
    assertClean(c);
  });
  test('8. funnel: the widget shows the funnel report step counts and drop-off; a campaign filter narrows them', { timeout: 120_000 }, async () => {
    const c = await context();
    const page = await c.newPage();
    const range = fixedRange(7);
    // A dashboard of its own with the funnel widget (the default layout has none).
    const layout = { widgets: [{ id: 'checkout', kind: 'funnel', funnel: 'checkout', width: 2, height: 2 }, { id: 'events', kind: 'kpi', metric: 'events', width: 1, height: 1 }] };
    const saved = await api(env, `tenants/${env.tenant}/dashboards/funnels`, { key: env.readKey, method: 'PUT', body: { title: 'Funnels', layout } });
    assert.equal(saved.status, 200, JSON.stringify(saved.body));
    await signIn(page, env, env.readKey, `?dashboard=funnels&from=${range.from}&to=${range.to}`);
    const widget = page.locator('[data-testid="widget"][data-kind="funnel"]');
    const steps = () => widget.locator('[data-testid="funnel-step"]').evaluateAll((els) => els.map((li) => Number(li.dataset.sessions)));
    const report = await get(env, `tenants/${env.tenant}/funnels/checkout/report`, { key: env.readKey, query: range });
    assert.equal(report.steps.length, 3);
    assert.ok(report.steps[0].sessions > report.steps[2].sessions && report.steps[2].sessions > 0, JSON.stringify(report.steps));
    await until('the funnel widget drew the report', async () => JSON.stringify(await steps()) === JSON.stringify(report.steps.map((s) => s.sessions)));
    const drops = await widget.getByTestId('funnel-drop').allTextContents();
    assert.equal(drops.length, 2);
    assert.match(drops[0], new RegExp(`${(report.steps[0].sessions - report.steps[1].sessions).toLocaleString('en-US')}`));

    // A campaign filter (the only one funnels take) narrows the steps to sessions it started.
    const campaigns = await get(env, `tenants/${env.tenant}/campaigns`, { key: env.readKey, query: { ...range, model: 'session', limit: 50 } });
    const campaign = campaigns.rows.find((r) => r.campaign !== '' && r.sessions > 0)?.campaign;
    assert.ok(campaign, 'a campaign that started sessions');
    const narrowed = await get(env, `tenants/${env.tenant}/funnels/checkout/report`, { key: env.readKey, query: { ...range, campaign } });
    assert.ok(narrowed.steps[0].sessions < report.steps[0].sessions);
    await page.goto(page.url().replace(/\?/, `?campaign=${encodeURIComponent(campaign)}&`));
    await loaded(page);
    await until('the funnel widget under the campaign filter', async () => JSON.stringify(await steps()) === JSON.stringify(narrowed.steps.map((s) => s.sessions)));
    await widget.screenshot({ path: join(env.screenshots, 'dashboard-funnel.png') });
    // Any other filter: the widget says funnels take a campaign filter only.
    await page.goto(page.url().replace(/campaign=[^&]*/, 'country=DE'));
    await loaded(page);
    await widget.getByTestId('funnel-unavailable').filter({ hasText: /country/ }).waitFor();
    assertClean(c);
  });
});

