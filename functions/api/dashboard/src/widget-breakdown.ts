// A breakdown: one dimension's values as bars, each a button that filters the dashboard.

import { clear, h } from './dom';
import { DIMENSION_LABELS, METRIC_LABELS, dimensionValueLabel, formatErrorBound, formatMetric, isDistinct, metricValue } from './format';
import { keepFocus } from './focus';
import type { Breakdown } from './types';
import type { RenderContext, WidgetView } from './widgets';

export function renderBreakdown(view: WidgetView, b: Breakdown, ctx: RenderContext): void {
  const metric = view.widget.metric ?? 'events';
  const dimension = view.widget.dimension ?? b.dimension;
  const fixed = ctx.fixed[dimension] !== undefined;
  const active = ctx.filters[dimension];
  const values = b.rows.map((r) => Math.max(0, metricValue(r, metric)));
  const max = Math.max(0, ...values);
  const bound = isDistinct(metric) && ctx.errorBound !== null ? ` ${formatErrorBound(ctx.errorBound)}` : '';
  view.note.textContent = `${METRIC_LABELS[metric].toLowerCase()}${bound}`;
  view.note.title = `Top ${b.rows.length} ${DIMENSION_LABELS[dimension].toLowerCase()} values by ${METRIC_LABELS[metric].toLowerCase()}`;

  keepFocus(view.body, () => {
    clear(view.body);
    if (b.rows.length === 0) {
      view.body.append(h('p', { class: 'muted' }, 'No events in this range.'));
      return;
    }
    const list = h('ul', {
      class: 'bars',
      'data-testid': 'breakdown-rows',
      'aria-label': `${DIMENSION_LABELS[dimension]} by ${METRIC_LABELS[metric].toLowerCase()}; choose one to filter the dashboard`,
    });
    b.rows.forEach((row, i) => {
      const value = values[i] ?? 0;
      const shown = dimensionValueLabel(row.value);
      const pressed = active === row.value;
      const fill = h('span', { class: 'bar-fill' });
      fill.style.width = `${max > 0 ? (value / max) * 100 : 0}%`;
      const button = h(
        'button',
        {
          type: 'button',
          class: 'bar-row',
          'data-testid': 'breakdown-row',
          'data-dimension': dimension,
          'data-value': row.value,
          'data-focus-key': `${dimension}:${row.value}`,
          'aria-pressed': String(pressed),
          disabled: fixed,
          title: fixed
            ? `${DIMENSION_LABELS[dimension]} is fixed by the share link`
            : pressed
              ? `Remove the filter ${DIMENSION_LABELS[dimension]} = ${shown}`
              : `Filter the dashboard by ${DIMENSION_LABELS[dimension]} = ${shown}`,
          onclick: () => ctx.toggleFilter(dimension, row.value),
        },
        h('span', { class: 'bar-label' }, shown),
        h('span', { class: 'bar-track', 'aria-hidden': 'true' }, fill),
        h('span', { class: 'bar-value', 'data-testid': 'breakdown-value' }, formatMetric(metric, value)),
      );
      list.append(h('li', {}, button));
    });
    view.body.append(list);
  });
}
