// A top list of pages or devices: TopN counts, which are estimates.

import { clear, h } from './dom';
import { formatInteger } from './format';
import type { Top } from './types';
import type { RenderContext, WidgetView } from './widgets';

export function renderTop(view: WidgetView, t: Top, _ctx: RenderContext): void {
  view.note.textContent = t.estimated ? 'estimated counts' : '';
  view.note.title = t.estimated ? 'TopN counters: counts are estimates after merges' : '';
  view.note.dataset.testid = 'top-estimated';
  clear(view.body);
  if (t.items.length === 0) {
    view.body.append(h('p', { class: 'muted' }, 'Nothing in this range.'));
    return;
  }
  const list = h('ol', { class: 'top-list', 'data-testid': 'top-items' });
  for (const item of t.items) {
    list.append(
      h(
        'li',
        { 'data-testid': 'top-item' },
        h('span', { class: 'top-item', title: item.item }, item.item || '(none)'),
        h(
          'span',
          { class: 'top-count' },
          t.estimated ? h('span', { 'aria-label': 'about' }, '≈ ') : null,
          formatInteger(item.count),
        ),
      ),
    );
  }
  view.body.append(list);
}
