// Widgets: what each needs from the API, and its frame on the grid. The kinds draw themselves
// in widget-*.ts.

import { Api, ApiError, type Query } from './api';
import { clear, h, uid } from './dom';
import { DIMENSION_LABELS, KIND_LABELS, METRIC_LABELS, TOP_LABELS } from './format';
import type { DimensionName, Filters, Widget } from './types';
import { renderKpi } from './widget-kpi';
import { renderTimeseries } from './widget-timeseries';
import { renderBreakdown } from './widget-breakdown';
import { renderTop } from './widget-top';
import { renderIngest } from './widget-ingest';
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
}

/** One API request, shared by every widget that needs the same one. */
export interface Need {
  key: string;
  endpoint: 'summary' | 'timeseries' | 'breakdown' | 'top' | 'ingest';
  query: Query;
}

export type Outcome = { ok: true; data: unknown; query: string } | { ok: false; error: ApiError };

/** Rows of a breakdown or top list, by widget height. */
export function rowsFor(height: number): number {
  return height <= 1 ? 5 : height === 2 ? 10 : 16;
}

/** The request `widget` needs, given the range and filter parameters of the dashboard. */
export function needOf(widget: Widget, base: Query, range: Query): Need {
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
  }
}

export function fetchNeed(api: Api, tenant: number, need: Need, signal: AbortSignal): Promise<unknown> {
  return api.report(tenant, need.endpoint, need.query, signal);
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
    }
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
