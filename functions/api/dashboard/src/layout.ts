// Dashboard layouts: the built-in default, checks mirroring the server's, and edits.

import {
  DIMENSIONS,
  METRICS,
  MODELS,
  TOP_LISTS,
  WIDGET_KINDS,
  type Dashboard,
  type Layout,
  type Widget,
  type WidgetKind,
} from './types';

export const MAX_WIDGETS = 30;
export const MAX_TITLE = 80;
export const WIDGET_ID = /^[A-Za-z0-9_-]{1,32}$/;
/** A funnel's name, as the server checks it. */
export const FUNNEL_NAME = /^[a-z0-9][a-z0-9-]{0,39}$/;
/** The funnel a new funnel widget draws until its editor names another. */
export const DEFAULT_FUNNEL = 'checkout';

function w(id: string, kind: WidgetKind, width: number, height: number, extra: Partial<Widget> = {}): Widget {
  return { id, kind, width, height, ...extra };
}

export function defaultLayout(): Layout {
  return {
    widgets: [
      w('kpi-events', 'kpi', 1, 1, { metric: 'events' }),
      w('kpi-devices', 'kpi', 1, 1, { metric: 'unique_devices' }),
      w('kpi-revenue', 'kpi', 1, 1, { metric: 'revenue' }),
      w('kpi-conversion', 'kpi', 1, 1, { metric: 'conversion_rate' }),
      w('ts-events', 'timeseries', 2, 2, { metric: 'events' }),
      w('ts-devices', 'timeseries', 2, 2, { metric: 'unique_devices' }),
      w('ts-revenue', 'timeseries', 2, 2, { metric: 'revenue' }),
      w('ts-conversion', 'timeseries', 2, 2, { metric: 'conversion_rate' }),
      w('bd-country', 'breakdown', 1, 2, { metric: 'events', dimension: 'country' }),
      w('bd-browser', 'breakdown', 1, 2, { metric: 'events', dimension: 'browser' }),
      w('bd-event-type', 'breakdown', 1, 2, { metric: 'events', dimension: 'event_type' }),
      w('bd-campaign', 'breakdown', 1, 2, { metric: 'events', dimension: 'campaign' }),
      w('top-pages', 'top', 2, 2, { list: 'pages' }),
      w('top-devices', 'top', 2, 2, { list: 'devices' }),
      w('campaigns', 'campaigns', 4, 3, { model: 'last_touch' }),
      w('ingest', 'ingest', 4, 2),
    ],
  };
}

export function defaultDashboard(name: string, title: string): Dashboard {
  return { name, title, layout: defaultLayout(), version: null };
}

/** A fresh widget id, unique in `layout`. */
export function newWidgetId(layout: Layout, kind: WidgetKind): string {
  const taken = new Set(layout.widgets.map((x) => x.id));
  for (;;) {
    const id = `${kind}-${Math.random().toString(36).slice(2, 8)}`;
    if (!taken.has(id)) return id;
  }
}

/** A widget of `kind` with the fields that kind needs and no others. */
export function widgetOfKind(id: string, kind: WidgetKind, from?: Partial<Widget>): Widget {
  const widget: Widget = {
    id,
    kind,
    width: from?.width ?? (kind === 'kpi' ? 1 : kind === 'campaigns' ? 4 : 2),
    height: from?.height ?? (kind === 'kpi' ? 1 : kind === 'campaigns' ? 3 : 2),
  };
  if (from?.title) widget.title = from.title;
  if (kind === 'kpi' || kind === 'timeseries' || kind === 'breakdown') widget.metric = from?.metric ?? 'events';
  if (kind === 'breakdown') widget.dimension = from?.dimension ?? 'country';
  if (kind === 'top') widget.list = from?.list ?? 'pages';
  if (kind === 'campaigns') widget.model = from?.model ?? 'last_touch';
  if (kind === 'funnel') widget.funnel = from?.funnel ?? DEFAULT_FUNNEL;
  return widget;
}

/** Why a layout would be refused, or null. */
export function layoutProblem(layout: Layout): string | null {
  if (layout.widgets.length > MAX_WIDGETS) return `a dashboard holds at most ${MAX_WIDGETS} widgets`;
  const ids = new Set<string>();
  for (const x of layout.widgets) {
    if (!WIDGET_ID.test(x.id) || ids.has(x.id)) return `widget id ${x.id} is malformed or repeated`;
    ids.add(x.id);
    if (!WIDGET_KINDS.includes(x.kind)) return `unknown widget kind ${x.kind}`;
    if (!(x.width >= 1 && x.width <= 4 && x.height >= 1 && x.height <= 3)) return 'widget sizes are 1–4 wide and 1–3 high';
    if (x.title !== undefined && x.title.length > MAX_TITLE) return `widget titles are at most ${MAX_TITLE} characters`;
    const needsMetric = x.kind === 'kpi' || x.kind === 'timeseries' || x.kind === 'breakdown';
    if (needsMetric !== (x.metric !== undefined && METRICS.includes(x.metric))) return `widget ${x.id}: metric`;
    if ((x.kind === 'breakdown') !== (x.dimension !== undefined && DIMENSIONS.includes(x.dimension))) return `widget ${x.id}: dimension`;
    if ((x.kind === 'top') !== (x.list !== undefined && TOP_LISTS.includes(x.list))) return `widget ${x.id}: list`;
    if ((x.kind === 'campaigns') !== (x.model !== undefined && MODELS.includes(x.model))) return `widget ${x.id}: model`;
    if ((x.kind === 'funnel') !== (x.funnel !== undefined && FUNNEL_NAME.test(x.funnel))) return `widget ${x.id}: funnel name (a-z, 0-9 and '-', at most 40)`;
  }
  const r = layout.refresh_seconds;
  if (r !== undefined && !(Number.isInteger(r) && r >= 2 && r <= 3600)) return 'refresh is 2 to 3600 seconds';
  return null;
}

/** A deep copy with only the fields the server knows (it refuses unknown ones). */
export function cleanLayout(layout: Layout): Layout {
  const out: Layout = {
    widgets: layout.widgets.map((x) => {
      const c = widgetOfKind(x.id, x.kind, x);
      c.width = x.width;
      c.height = x.height;
      return c;
    }),
  };
  if (layout.refresh_seconds !== undefined) out.refresh_seconds = layout.refresh_seconds;
  return out;
}

export function sameLayout(a: Layout, b: Layout): boolean {
  return JSON.stringify(cleanLayout(a)) === JSON.stringify(cleanLayout(b));
}

export function moveWidget(layout: Layout, from: number, to: number): void {
  if (from < 0 || from >= layout.widgets.length || to < 0 || to >= layout.widgets.length) return;
  const [moved] = layout.widgets.splice(from, 1);
  if (moved) layout.widgets.splice(to, 0, moved);
}
