// Widgets: what each needs from the API, and its frame on the grid. The kinds draw themselves
// in widget-*.ts.

import { Api, ApiError, type Query } from './api';
import { clear, h, uid } from './dom';
import { DIMENSION_LABELS, KIND_LABELS, METRIC_LABELS, TOP_LABELS } from './format';
import { DIMENSIONS, type DimensionName, type Filters, type ModelName, type Widget } from './types';
import { renderKpi } from './widget-kpi';
import { renderTimeseries } from './widget-timeseries';
import { renderBreakdown } from './widget-breakdown';
import { renderTop } from './widget-top';
import { renderIngest } from './widget-ingest';
import { renderCampaigns } from './widget-campaigns';
import { renderFunnel } from './widget-funnel';
import type { Chart } from './charts';

/** What a widget draws with: the tenant's zone, the filters, and how to change them. */
export interface RenderContext {
  zone: string;
  filters: Filters;
  fixed: Record<string, string>;
  errorBound: number | null;
  /** A share link's view: raw event payloads (dead-letter previews) are not shown. */
  readOnly: boolean;
  toggleFilter(dimension: DimensionName, value: string): void;
  /** Fetch again now (a widget changed what it asks for, e.g. its attribution model). */
  refresh(): void;
}

/** One API request, shared by every widget that needs the same one. */
export interface Need {
  key: string;
  /** A report's path under the tenant (a funnel's is `funnels/{name}/report`). */
  endpoint: string;
  query: Query;
  /** Why the request is not made (its answer would not honour the dashboard's filters). */
  unavailable?: string;
  /** The funnel a funnel widget's request reports on. */
  funnel?: string;
}

/** What the campaigns widget draws instead of figures its report cannot filter. */
export interface Unavailable {
  unavailable: string;
}

export type Outcome = { ok: true; data: unknown; query: string } | { ok: false; error: ApiError };

/** Rows of a breakdown or top list, by widget height. */
export function rowsFor(height: number): number {
  return height <= 1 ? 5 : height === 2 ? 10 : 16;
}

/** The request `widget` needs, given the range and filter parameters of the dashboard and the
 * share link's fixed filters (applied by the server, so not in `base`). */
export function needOf(widget: Widget, base: Query, range: Query, fixed: Record<string, string> = {}): Need {
  switch (widget.kind) {
    case 'kpi':
      return { key: 'summary', endpoint: 'summary', query: base };
    case 'timeseries':
      return { key: 'timeseries', endpoint: 'timeseries', query: base };
    case 'breakdown': {
      const limit = rowsFor(widget.height);
      // Ranked by the metric the widget shows (the API ranks by events unless told).
      const order = widget.metric ?? 'events';
      return {
        key: `breakdown:${widget.dimension}:${order}:${limit}`,
        endpoint: 'breakdown',
        query: { ...base, dimension: widget.dimension, order, limit },
      };
    }
    case 'top': {
      const n = rowsFor(widget.height);
      return { key: `top:${widget.list}:${n}`, endpoint: 'top', query: { ...base, list: widget.list, n } };
    }
    case 'ingest':
      // The delivery ledger has no dimensions: dashboard filters do not apply to it.
      return { key: 'ingest', endpoint: 'ingest', query: { ...range, dead_letters: 20 } };
    case 'campaigns': {
      // Touches and conversions carry no country, browser or single event type: under such a
      // filter the report would show figures of every event, so it is not asked for.
      const model = widget.model ?? 'last_touch';
      const limit = rowsFor(widget.height);
      const query: Query = { ...range, model, limit };
      if (base.campaign !== undefined) query.campaign = base.campaign;
      const others = DIMENSIONS.filter((d) => d !== 'campaign' && (base[d] !== undefined || fixed[d] !== undefined));
      const need: Need = { key: `campaigns:${model}:${limit}`, endpoint: 'campaigns', query };
      if (others.length) {
        const names = others.map((d) => DIMENSION_LABELS[d].toLowerCase()).join(' and ');
        need.key = `campaigns-unavailable:${others.join(',')}`;
        need.unavailable = `Campaign figures cannot be filtered by ${names}: only a campaign filter applies to them.`;
      }
      return need;
    }
    case 'funnel': {
      // Like the campaign report: a session's funnel state carries its campaign only.
      const name = widget.funnel ?? 'checkout';
      const query: Query = { ...range };
      if (base.campaign !== undefined) query.campaign = base.campaign;
      const need: Need = { key: `funnel:${name}`, endpoint: `funnels/${encodeURIComponent(name)}/report`, query, funnel: name };
      const others = DIMENSIONS.filter((d) => d !== 'campaign' && (base[d] !== undefined || fixed[d] !== undefined));
      if (others.length) {
        const names = others.map((d) => DIMENSION_LABELS[d].toLowerCase()).join(' and ');
        need.key = `funnel-unavailable:${others.join(',')}`;
        need.unavailable = `Funnel figures cannot be filtered by ${names}: only a campaign filter applies to them.`;
      }
      return need;
    }
  }
}

/** What the funnel widget draws when its funnel is not defined (yet): not a failure. */
export interface MissingFunnel {
  missing: string;
}

export async function fetchNeed(api: Api, tenant: number, need: Need, signal: AbortSignal): Promise<unknown> {
  if (need.unavailable !== undefined) return { unavailable: need.unavailable } satisfies Unavailable;
  try {
    return await api.report(tenant, need.endpoint, need.query, signal);
  } catch (e) {
    if (need.funnel !== undefined && e instanceof ApiError && e.code === 'not_found') return { missing: need.funnel } satisfies MissingFunnel;
    throw e;
  }
}

export function widgetTitle(w: Widget): string {
  if (w.title) return w.title;
  switch (w.kind) {
    case 'kpi':
    case 'timeseries':
      return METRIC_LABELS[w.metric ?? 'events'];
    case 'breakdown':
      return `${DIMENSION_LABELS[w.dimension ?? 'country']}`;
    case 'top':
      return TOP_LABELS[w.list ?? 'pages'];
    case 'ingest':
      return KIND_LABELS.ingest;
    case 'campaigns':
      return KIND_LABELS.campaigns;
    case 'funnel':
      return `${KIND_LABELS.funnel}: ${w.funnel ?? 'checkout'}`;
  }
}

/** A widget on the grid: a titled frame whose body its kind fills. */
export class WidgetView {
  readonly el: HTMLElement;
  readonly head: HTMLElement;
  readonly note: HTMLElement;
  readonly body: HTMLElement;
  readonly tools: HTMLElement;
  chart: Chart | null = null;
  /** The campaigns widget's model as chosen in the view (the layout's until then). */
  modelChoice: ModelName | null = null;
  /** The campaigns widget's sort: a column, descending or not (null: the report's order). */
  sort: { column: string; descending: boolean } | null = null;
  private readonly titleEl: HTMLElement;

  constructor(readonly widget: Widget) {
    const titleId = uid('wt');
    this.titleEl = h('h2', { id: titleId, class: 'widget-title' }, widgetTitle(widget));
    this.note = h('span', { class: 'widget-note' });
    this.head = h('header', { class: 'widget-head' }, this.titleEl, this.note);
    this.body = h('div', { class: 'widget-body', 'aria-busy': 'true' }, h('p', { class: 'muted' }, 'Loading…'));
    this.tools = h('div', { class: 'widget-tools', hidden: true });
    this.el = h(
      'section',
      {
        class: `widget kind-${widget.kind} w${widget.width} h${widget.height}`,
        'data-testid': 'widget',
        'data-widget-id': widget.id,
        'data-kind': widget.kind,
        'aria-labelledby': titleId,
      },
      this.head,
      this.body,
      this.tools,
    );
  }

  render(outcome: Outcome | undefined, ctx: RenderContext): void {
    if (!outcome) return;
    this.body.removeAttribute('aria-busy');
    if (!outcome.ok) {
      this.disposeChart();
      clear(this.body);
      this.body.append(h('p', { class: 'error', 'data-testid': 'widget-error' }, outcome.error.message));
      this.el.dataset.query = '';
      return;
    }
    this.el.dataset.query = outcome.query;
    const w = this.widget;
    switch (w.kind) {
      case 'kpi':
        renderKpi(this, outcome.data as never, ctx);
        break;
      case 'timeseries':
        renderTimeseries(this, outcome.data as never, ctx);
        break;
      case 'breakdown':
        renderBreakdown(this, outcome.data as never, ctx);
        break;
      case 'top':
        renderTop(this, outcome.data as never, ctx);
        break;
      case 'ingest':
        renderIngest(this, outcome.data as never, ctx);
        break;
      case 'campaigns':
        renderCampaigns(this, outcome.data as never, ctx);
        break;
      case 'funnel':
        renderFunnel(this, outcome.data as never);
        break;
    }
  }

  /** The widget as this view asks for it: with the model chosen in the view. */
  effective(): Widget {
    return this.modelChoice === null ? this.widget : { ...this.widget, model: this.modelChoice };
  }

  disposeChart(): void {
    this.chart?.dispose();
    this.chart = null;
  }

  dispose(): void {
    this.disposeChart();
    this.el.remove();
  }
}
