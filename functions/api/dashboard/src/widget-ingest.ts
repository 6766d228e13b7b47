// Ingest health: the delivery ledger per hour and the latest dead letters with their reasons.

import { AXIS_TEXT, Chart, GRID_LINE } from './charts';
import { clear, h } from './dom';
import { formatAxis, formatInteger } from './format';
import { formatDateTime, formatDayTime, formatTime } from './tz';
import type { IngestReport, LedgerHour } from './types';
import type { RenderContext, WidgetView } from './widgets';
import { escapeHtml } from './widget-timeseries';

const HOUR = 3_600_000;
const SERIES = [
  { key: 'stored', label: 'Stored', color: '#2563eb' },
  { key: 'duplicates', label: 'Duplicates', color: '#f59e0b' },
  { key: 'dead_lettered', label: 'Dead-lettered', color: '#dc2626' },
] as const;

function hoursOf(report: IngestReport): { ms: number; hour: LedgerHour | null }[] {
  const byHour = new Map(report.hours.map((x) => [Date.parse(x.hour), x] as const));
  const out: { ms: number; hour: LedgerHour | null }[] = [];
  const end = Date.parse(report.range.to);
  for (let ms = Date.parse(report.range.from); ms < end && out.length < 24 * 400; ms += HOUR) {
    out.push({ ms, hour: byHour.get(ms) ?? null });
    byHour.delete(ms);
  }
  for (const [ms, hour] of byHour) out.push({ ms, hour });
  return out.sort((a, b) => a.ms - b.ms);
}

export function renderIngest(view: WidgetView, report: IngestReport, ctx: RenderContext): void {
  const totals = { received: 0, stored: 0, duplicates: 0, dead_lettered: 0 };
  for (const x of report.hours) {
    totals.received += x.received;
    totals.stored += x.stored;
    totals.duplicates += x.duplicates;
    totals.dead_lettered += x.dead_lettered;
  }
  const filtered = Object.keys(ctx.filters).length > 0 || Object.keys(ctx.fixed).length > 0;
  view.note.textContent = filtered ? 'all events: filters do not apply' : 'per hour of arrival';

  const hours = hoursOf(report);
  const span = Date.parse(report.range.to) - Date.parse(report.range.from);
  const label = (ms: number) => (span > 86_400_000 ? formatDayTime(ms, ctx.zone) : formatTime(ms, ctx.zone));
  const chartLabel =
    `Deliveries per hour, ${formatDateTime(Date.parse(report.range.from), ctx.zone)} to ` +
    `${formatDateTime(Date.parse(report.range.to), ctx.zone)}: ${formatInteger(totals.received)} received, ` +
    `${formatInteger(totals.stored)} stored, ${formatInteger(totals.duplicates)} duplicates, ` +
    `${formatInteger(totals.dead_lettered)} dead-lettered.`;

  view.disposeChart();
  clear(view.body);
  const stat = (name: string, key: keyof typeof totals) =>
    h('div', { class: `stat stat-${key}` }, h('dt', {}, name), h('dd', { 'data-testid': `ingest-${key}` }, formatInteger(totals[key])));
  const chartBox = h('div', { class: 'chart', role: 'img', 'aria-label': chartLabel, 'data-testid': 'ingest-chart' });
  const letters = report.recent_dead_letters;
  const table =
    letters.length === 0
      ? h('p', { class: 'muted' }, 'No dead letters.')
      : h(
          'table',
          { class: 'dead-letters' },
          h('caption', { class: 'sr-only' }, 'Recent dead letters'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Arrived'), h('th', { scope: 'col' }, 'Reason'), h('th', { scope: 'col' }, 'Message'), h('th', { scope: 'col' }, 'Replay'))),
          h(
            'tbody',
            {},
            letters.map((d) =>
              h(
                'tr',
                { 'data-testid': 'dead-letter' },
                h('td', { class: 'nowrap' }, formatDayTime(Date.parse(d.enqueued_at), ctx.zone)),
                h('td', {}, h('code', { class: 'reason' }, d.reason)),
                h('td', { class: 'message', title: ctx.readOnly ? undefined : `Payload: ${d.payload_preview}` }, d.message),
                h('td', {}, d.replay_status),
              ),
            ),
          ),
        );
  view.body.append(
    h(
      'div',
      { class: 'ingest' },
      h('dl', { class: 'stats' }, stat('Received', 'received'), stat('Stored', 'stored'), stat('Duplicates', 'duplicates'), stat('Dead-lettered', 'dead_lettered')),
      h('div', { class: 'ingest-main' }, chartBox, h('div', { class: 'dead-letter-box' }, h('h3', {}, 'Recent dead letters'), table)),
    ),
  );
  view.chart = new Chart(chartBox);
  view.chart.set({
    dataset: {
      source: hours.map((x) => [label(x.ms), ...SERIES.map((s) => (x.hour ? x.hour[s.key] : 0))]),
    },
    grid: { left: 8, right: 26, top: 26, bottom: 4, containLabel: true },
    legend: { top: 0, right: 0, itemWidth: 12, itemHeight: 8, textStyle: { color: AXIS_TEXT } },
    tooltip: {
      trigger: 'axis',
      formatter: (params: unknown) => {
        const list = (Array.isArray(params) ? params : [params]) as { dataIndex: number }[];
        const x = hours[list[0]?.dataIndex ?? -1];
        if (!x) return '';
        const v = x.hour ?? { received: 0, stored: 0, duplicates: 0, dead_lettered: 0 };
        return [
          escapeHtml(formatDateTime(x.ms, ctx.zone)),
          `Received: <b>${formatInteger(v.received)}</b>`,
          ...SERIES.map((s) => `${escapeHtml(s.label)}: <b>${formatInteger(v[s.key])}</b>`),
        ].join('<br>');
      },
    },
    xAxis: { type: 'category', axisLabel: { color: AXIS_TEXT, hideOverlap: true }, axisTick: { show: false }, axisLine: { lineStyle: { color: GRID_LINE } } },
    yAxis: { type: 'value', min: 0, axisLabel: { color: AXIS_TEXT, formatter: (v: number) => formatAxis('events', v) }, splitLine: { lineStyle: { color: GRID_LINE } } },
    series: SERIES.map((s, i) => ({
      type: 'bar' as const,
      name: s.label,
      stack: 'deliveries',
      encode: { x: 0, y: i + 1 },
      itemStyle: { color: s.color },
      barMaxWidth: 18,
    })),
  });
}
