// The funnel widget: one bar per step of a tenant's funnel, the sessions that reached it (in
// order, within the session) and what was lost from the step before.

import { clear, h } from './dom';
import { keepFocus } from './focus';
import { formatInteger, formatPercent } from './format';
import type { FunnelReport, FunnelStep } from './types';
import type { MissingFunnel, Unavailable, WidgetView } from './widgets';

function stepLabel(s: FunnelStep): string {
  const kind = s.event_type.replace(/_/g, ' ');
  return s.url_prefix ? `${kind} · ${s.url_prefix}` : kind;
}

export function renderFunnel(view: WidgetView, data: FunnelReport | Unavailable | MissingFunnel): void {
  keepFocus(view.body, () => {
    clear(view.body);
    if ('unavailable' in data) {
      view.note.textContent = '';
      view.body.append(h('p', { class: 'muted', 'data-testid': 'funnel-unavailable' }, data.unavailable));
      return;
    }
    if ('missing' in data) {
      view.note.textContent = '';
      view.body.append(
        h('p', { class: 'muted', 'data-testid': 'funnel-missing' }, `No funnel named “${data.missing}” yet: a key holder defines it with PUT /api/v1/tenants/{id}/funnels/${data.missing} or remarketable funnel save (see the README).`),
      );
      return;
    }
    const first = data.steps[0]?.sessions ?? 0;
    const last = data.steps[data.steps.length - 1];
    view.note.textContent = first > 0 && last ? `${formatPercent(last.sessions / first)} complete` : '';
    view.note.title = `${data.funnel.title}: sessions that started in the range, by the steps they reached in order`;
    if (first === 0) {
      view.body.append(h('p', { class: 'muted' }, 'No session reached the first step in this range.'));
      return;
    }
    const list = h('ol', { class: 'bars funnel', 'data-testid': 'funnel-steps', 'aria-label': `${data.funnel.title}: sessions per step` });
    data.steps.forEach((s, i) => {
      const fill = h('span', { class: 'bar-fill' });
      fill.style.width = `${(s.sessions / first) * 100}%`;
      const previous = i > 0 ? data.steps[i - 1] : undefined;
      const lost = previous ? previous.sessions - s.sessions : 0;
      const drop =
        previous && s.from_previous !== null
          ? h('span', { class: 'muted funnel-drop', 'data-testid': 'funnel-drop' }, `−${formatInteger(lost)} (${formatPercent(1 - s.from_previous)} drop-off)`)
          : h('span', { class: 'muted funnel-drop' }, '');
      list.append(
        h(
          'li',
          { class: 'bar-row funnel-step', 'data-testid': 'funnel-step', 'data-step': String(s.step), 'data-sessions': String(s.sessions) },
          h('span', { class: 'bar-label', title: stepLabel(s) }, `${s.step}. ${stepLabel(s)}`),
          h('span', { class: 'bar-track', 'aria-hidden': 'true' }, fill),
          h('span', { class: 'bar-value', 'data-testid': 'funnel-sessions' }, formatInteger(s.sessions)),
          drop,
        ),
      );
    });
    view.body.append(list);
  });
}
