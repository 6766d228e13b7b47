// Labels and number formats.

import type { DimensionName, MetricName, Metrics, ModelName, TopListName, WidgetKind } from './types';

export const METRIC_LABELS: Record<MetricName, string> = {
  events: 'Events',
  unique_devices: 'Unique devices',
  unique_sessions: 'Unique sessions',
  revenue: 'Revenue',
  purchases: 'Purchases',
  conversion_rate: 'Conversion rate',
};

export const DIMENSION_LABELS: Record<DimensionName, string> = {
  country: 'Country',
  browser: 'Browser',
  event_type: 'Event type',
  campaign: 'Campaign',
};

export const TOP_LABELS: Record<TopListName, string> = {
  pages: 'Top pages',
  devices: 'Top devices',
};

export const KIND_LABELS: Record<WidgetKind, string> = {
  kpi: 'KPI tile',
  timeseries: 'Time series',
  breakdown: 'Breakdown',
  top: 'Top list',
  campaigns: 'Campaigns',
  funnel: 'Funnel',
  ingest: 'Ingest health',
};

export const MODEL_LABELS: Record<ModelName, string> = {
  last_touch: 'Last touch',
  first_touch: 'First touch',
  session: 'Session source',
};

/** Distinct counts are HyperLogLog estimates. */
export function isDistinct(metric: MetricName): boolean {
  return metric === 'unique_devices' || metric === 'unique_sessions';
}

export function metricValue(m: Metrics, metric: MetricName): number {
  const v = m[metric];
  return typeof v === 'number' ? v : Number(v);
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const percent = new Intl.NumberFormat(undefined, {
  style: 'percent',
  minimumFractionDigits: 1,
  maximumFractionDigits: 2,
});
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });

export function formatInteger(n: number): string {
  return integer.format(n);
}

/** An amount of money (revenue, cost), two decimals. */
export function formatMoney(n: number): string {
  return money.format(n);
}

/** A multiple (frequency, ROAS): "2.50×". */
export function formatMultiple(n: number): string {
  return `${money.format(n)}×`;
}

/** A share (CTR, conversion rate) as a percentage. */
export function formatPercent(n: number): string {
  return percent.format(n);
}

export function formatMetric(metric: MetricName, n: number): string {
  switch (metric) {
    case 'revenue':
      return formatMoney(n);
    case 'conversion_rate':
      return formatPercent(n);
    default:
      return integer.format(n);
  }
}

export function formatAxis(metric: MetricName, n: number): string {
  if (metric === 'conversion_rate') return percent.format(n);
  return Math.abs(n) >= 10_000 ? compact.format(n) : integer.format(n);
}

/** "± 1.6 %" from a relative error such as 0.0163. */
export function formatErrorBound(relative: number): string {
  return `± ${(relative * 100).toFixed(1)} %`;
}

/** The relative change from `previous` to `current`, or null when there was nothing before. */
export function change(current: number, previous: number): number | null {
  if (previous === 0) return current === 0 ? 0 : null;
  return (current - previous) / Math.abs(previous);
}

export function formatChange(c: number): string {
  const sign = c > 0 ? '+' : c < 0 ? '−' : '±';
  return `${sign}${(Math.abs(c) * 100).toFixed(1)} %`;
}

/** "just now", "12 s", "3 min", "2 h" ago. */
export function formatAgo(seconds: number): string {
  if (seconds < 1) return 'just now';
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

/** A breakdown value as shown: the empty value selects events without the dimension. */
export function dimensionValueLabel(value: string): string {
  return value === '' ? '(none)' : value;
}
