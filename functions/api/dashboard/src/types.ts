// Shapes of the reports API (functions/handler/src/*.rs, shared/src/reports.rs) and of saved
// dashboards, as the page uses them.

export const METRICS = [
  'events',
  'unique_devices',
  'unique_sessions',
  'revenue',
  'purchases',
  'conversion_rate',
] as const;
export type MetricName = (typeof METRICS)[number];

export const DIMENSIONS = ['country', 'browser', 'event_type', 'campaign'] as const;
export type DimensionName = (typeof DIMENSIONS)[number];

export const TOP_LISTS = ['pages', 'devices'] as const;
export type TopListName = (typeof TOP_LISTS)[number];

export const WIDGET_KINDS = ['kpi', 'timeseries', 'breakdown', 'top', 'campaigns', 'funnel', 'ingest'] as const;
export type WidgetKind = (typeof WIDGET_KINDS)[number];

/** Attribution models of the campaign report. */
export const MODELS = ['last_touch', 'first_touch', 'session'] as const;
export type ModelName = (typeof MODELS)[number];

export const RANGE_PRESETS = ['1h', '24h', '7d', '30d'] as const;
export type RangePreset = (typeof RANGE_PRESETS)[number];

export type Filters = Partial<Record<DimensionName, string>>;

export interface Widget {
  id: string;
  kind: WidgetKind;
  metric?: MetricName;
  dimension?: DimensionName;
  list?: TopListName;
  model?: ModelName;
  /** The name of the funnel a funnel widget draws. */
  funnel?: string;
  width: number;
  height: number;
  title?: string;
}

export interface Layout {
  widgets: Widget[];
  refresh_seconds?: number;
}

export interface Dashboard {
  name: string;
  title: string;
  layout: Layout;
  /** null: the built-in default, not saved yet. */
  version: number | null;
  updated_at?: string;
}

export interface Identity {
  tenant_id: number;
  tenant_name?: string;
  time_zone?: string;
  read_only: boolean;
  fixed_filters: Record<string, string>;
  expires_at: string | null;
}

export interface TimeRange {
  from: string;
  to: string;
}

export interface Freshness {
  as_of: string;
  rolled_up_to_event: number;
}

export interface DistinctCounts {
  method: string;
  relative_error_95: number;
}

export interface Metrics {
  events: number;
  unique_devices: number;
  unique_sessions: number;
  /** rust_decimal serializes as a string. */
  revenue: string | number;
  purchases: number;
  conversion_rate: number;
}

interface Report {
  granularity: '5m' | '1h' | '1d';
  range: TimeRange;
  freshness: Freshness;
  distinct_counts?: DistinctCounts;
}

export interface Point extends Metrics {
  bucket: string;
}

export interface TimeSeries extends Report {
  points: Point[];
}

export interface BreakdownRow extends Metrics {
  value: string;
}

export interface Breakdown extends Report {
  dimension: DimensionName;
  rows: BreakdownRow[];
}

export interface Summary extends Report {
  current: Metrics;
  previous: Metrics;
  previous_range: TimeRange;
}

export interface Top extends Report {
  list: TopListName;
  items: { item: string; count: number }[];
  estimated: boolean;
}

/** Decimals (revenue, cost and the ratios of money) arrive as strings. */
type Money = string | number;

export interface CampaignRow {
  campaign: string;
  source: string;
  medium: string;
  impressions: number;
  clicks: number;
  ctr: number;
  reach: number;
  frequency: number;
  sessions: number;
  conversions: number;
  revenue: Money;
  conversion_rate: number;
  revenue_per_session: Money;
  /** null: no ad spend reported for the row (or nothing to divide by). */
  cost: Money | null;
  cpc: Money | null;
  cpa: Money | null;
  roas: Money | null;
}

export interface Campaigns {
  model: ModelName;
  range: TimeRange;
  rows: CampaignRow[];
  total_rows: number;
  totals: {
    conversions: number;
    revenue: Money;
    sessions: number;
    cost: Money | null;
    roas: Money | null;
    spend_currencies: string[];
  };
  freshness: { as_of: string; attributed_to_event: number };
  distinct_counts?: DistinctCounts;
}

export interface FunnelStep {
  step: number;
  event_type: string;
  url_prefix?: string;
  sessions: number;
  from_previous: number | null;
  from_first: number | null;
}

export interface FunnelReport {
  funnel: { name: string; title: string; steps: { event_type: string; url_prefix?: string }[] };
  range: TimeRange;
  steps: FunnelStep[];
  freshness: { as_of: string; attributed_to_event: number };
}

export interface LedgerHour {
  hour: string;
  received: number;
  stored: number;
  duplicates: number;
  dead_lettered: number;
}

export interface DeadLetter {
  dead_letter_id: number;
  reason: string;
  message: string;
  stream_partition: string;
  stream_sequence: number;
  enqueued_at: string;
  received_at: string;
  replay_status: string;
  payload_preview: string;
}

export interface IngestReport {
  range: TimeRange;
  hours: LedgerHour[];
  recent_dead_letters: DeadLetter[];
  freshness: Freshness;
}

export interface ShareToken {
  token_id: string;
  filters: Record<string, string>;
  label: string;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
}

export interface NewShareToken {
  token_id: string;
  token: string;
  expires_at: string;
  filters: Record<string, string>;
  label: string;
}
