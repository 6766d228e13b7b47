// A KPI tile: the metric over the range, and its change against the period before.

import { clear, h } from './dom';
import { change, formatChange, formatErrorBound, formatMetric, isDistinct, metricValue } from './format';
import { formatDateTime } from './tz';
import type { Summary } from './types';
import type { RenderContext, WidgetView } from './widgets';

export function renderKpi(view: WidgetView, s: Summary, ctx: RenderContext): void {
  const metric = view.widget.metric ?? 'events';
  const current = metricValue(s.current, metric);
  const previous = metricValue(s.previous, metric);
  const delta = change(current, previous);
  const prevFrom = formatDateTime(Date.parse(s.previous_range.from), ctx.zone);
  const prevTo = formatDateTime(Date.parse(s.previous_range.to), ctx.zone);
  const direction = delta === null || delta === 0 ? 'flat' : delta > 0 ? 'up' : 'down';
  const arrow = direction === 'up' ? '▲' : direction === 'down' ? '▼' : '';
  const bound = isDistinct(metric) && ctx.errorBound !== null ? formatErrorBound(ctx.errorBound) : null;

  clear(view.body);
  view.body.append(
    h(
      'div',
      { class: 'kpi' },
      h(
        'p',
        {
          class: 'kpi-value',
          'data-testid': 'kpi-value',
          'data-metric': metric,
          'data-value': String(current),
        },
        formatMetric(metric, current),
        bound ? h('span', { class: 'kpi-bound', title: 'HyperLogLog estimate: 95 % error bound' }, ` ${bound}`) : null,
      ),
      h(
        'p',
        {
          class: `kpi-change ${direction}`,
          'data-testid': 'kpi-change',
          title: `Previous period ${prevFrom} – ${prevTo}: ${formatMetric(metric, previous)}`,
        },
        arrow ? h('span', { 'aria-hidden': 'true' }, `${arrow} `) : null,
        delta === null
          ? h('span', { class: 'muted' }, 'nothing in the previous period')
          : [formatChange(delta), h('span', { class: 'muted' }, ` vs previous period (${formatMetric(metric, previous)})`)],
      ),
    ),
  );
}
