// A time series: one metric per bucket over the range (distinct counts: devices and sessions).

import { AXIS_TEXT, Chart, GRID_LINE } from './charts';
import { clear, h } from './dom';
import { formatAxis, formatErrorBound, formatMetric, isDistinct, METRIC_LABELS, metricValue } from './format';
import { formatDate, formatDateTime, formatDayTime, formatTime, nextBucket } from './tz';
import type { MetricName, Point, TimeSeries } from './types';
import type { RenderContext, WidgetView } from './widgets';

const MAX_BUCKETS = 2000;
const STEP_NAMES = { '5m': '5 minutes', '1h': 'hour', '1d': 'day' } as const;

interface Bucket {
  ms: number;
  point: Point | null;
}

/** Every bucket of the range: the API leaves out buckets without events. */
export function fillBuckets(ts: TimeSeries, zone: string): Bucket[] {
  const byStart = new Map<number, Point>();
  for (const p of ts.points) byStart.set(Date.parse(p.bucket), p);
  const end = Date.parse(ts.range.to);
  const out: Bucket[] = [];
  for (let ms = Date.parse(ts.range.from); ms < end && out.length < MAX_BUCKETS; ms = nextBucket(ms, ts.granularity, zone)) {
    out.push({ ms, point: byStart.get(ms) ?? null });
    byStart.delete(ms);
  }
  // Points off the expected grid (should not happen) are still shown, in order.
  if (byStart.size > 0) {
    for (const [ms, point] of byStart) out.push({ ms, point });
    out.sort((a, b) => a.ms - b.ms);
  }
  return out;
}

function summaryText(metric: MetricName, shown: MetricName[], buckets: Bucket[], ts: TimeSeries, zone: string): string {
  const head = `${shown.map((m) => METRIC_LABELS[m]).join(' and ')} per ${STEP_NAMES[ts.granularity]}, ${formatDateTime(Date.parse(ts.range.from), zone)} to ${formatDateTime(Date.parse(ts.range.to), zone)}`;
  if (buckets.length === 0) return `${head}: no data.`;
  const parts = shown.map((m) => {
    let peak = -Infinity;
    let peakAt = 0;
    let total = 0;
    for (const b of buckets) {
      const v = b.point ? metricValue(b.point, m) : 0;
      total += v;
      if (v > peak) {
        peak = v;
        peakAt = b.ms;
      }
    }
    const additive = m === 'events' || m === 'revenue' || m === 'purchases';
    const totalText = additive ? `total ${formatMetric(m, total)}, ` : '';
    return `${METRIC_LABELS[m]}: ${totalText}peak ${formatMetric(m, peak)} at ${formatDateTime(peakAt, zone)}`;
  });
  return `${head}. ${parts.join('; ')}.${isDistinct(metric) ? ' Distinct counts are estimates.' : ''}`;
}

export function renderTimeseries(view: WidgetView, ts: TimeSeries, ctx: RenderContext): void {
  const metric = view.widget.metric ?? 'events';
  const shown: MetricName[] = isDistinct(metric) ? ['unique_devices', 'unique_sessions'] : [metric];
  const buckets = fillBuckets(ts, ctx.zone);
  const span = Date.parse(ts.range.to) - Date.parse(ts.range.from);
  const label = (ms: number) =>
    ts.granularity === '1d' ? formatDate(ms, ctx.zone) : span > 86_400_000 ? formatDayTime(ms, ctx.zone) : formatTime(ms, ctx.zone);

  view.note.textContent =
    isDistinct(metric) && ctx.errorBound !== null ? `estimates ${formatErrorBound(ctx.errorBound)}` : '';
  view.note.title = isDistinct(metric) ? 'HyperLogLog distinct counts: 95 % relative error bound' : '';

  let box = view.chart?.el;
  if (!view.chart || !box || !view.body.contains(box)) {
    view.disposeChart();
    clear(view.body);
    box = h('div', { class: 'chart', role: 'img', 'data-testid': 'timeseries-chart' });
    view.body.append(box);
    view.chart = new Chart(box);
  }
  box.setAttribute('aria-label', summaryText(metric, shown, buckets, ts, ctx.zone));

  view.chart.set({
    dataset: {
      source: buckets.map((b) => [label(b.ms), ...shown.map((m) => (b.point ? metricValue(b.point, m) : 0))]),
    },
    grid: { left: 8, right: 26, top: shown.length > 1 ? 28 : 12, bottom: 4, containLabel: true },
    legend: shown.length > 1 ? { top: 0, right: 0, textStyle: { color: AXIS_TEXT } } : { show: false },
    tooltip: {
      trigger: 'axis',
      formatter: (params: unknown) => {
        const list = (Array.isArray(params) ? params : [params]) as { dataIndex: number; seriesIndex: number; marker: string }[];
        const first = list[0];
        if (!first) return '';
        const bucket = buckets[first.dataIndex];
        if (!bucket) return '';
        // ECharts puts this text in the tooltip as HTML: every part is escaped.
        const lines = list.map((p) => {
          const m = shown[p.seriesIndex] ?? metric;
          const v = bucket.point ? metricValue(bucket.point, m) : 0;
          return `${p.marker}${escapeHtml(METRIC_LABELS[m])}: <b>${escapeHtml(formatMetric(m, v))}</b>`;
        });
        return [escapeHtml(formatDateTime(bucket.ms, ctx.zone)), ...lines].join('<br>');
      },
    },
    xAxis: {
      type: 'category',
      boundaryGap: false,
      axisLabel: { color: AXIS_TEXT, hideOverlap: true },
      axisLine: { lineStyle: { color: GRID_LINE } },
      axisTick: { show: false },
    },
    yAxis: {
      type: 'value',
      min: 0,
      axisLabel: { color: AXIS_TEXT, formatter: (v: number) => formatAxis(metric, v) },
      splitLine: { lineStyle: { color: GRID_LINE } },
    },
    series: shown.map((m, i) => ({
      type: 'line' as const,
      name: METRIC_LABELS[m],
      encode: { x: 0, y: i + 1 },
      showSymbol: buckets.length <= 48,
      symbolSize: 5,
      lineStyle: { width: 2 },
      areaStyle: shown.length === 1 ? { opacity: 0.12 } : undefined,
    })),
  });
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
