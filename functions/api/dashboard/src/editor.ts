// The layout editor: per-widget tools (what it shows, size, order, removal, drag and drop)
// and the edit bar (dashboard title, add a widget, save or cancel).

import { h, select, uid } from './dom';
import { DIMENSION_LABELS, KIND_LABELS, METRIC_LABELS, MODEL_LABELS, TOP_LABELS } from './format';
import { FUNNEL_NAME, MAX_TITLE, MAX_WIDGETS, moveWidget, newWidgetId, widgetOfKind } from './layout';
import {
  DIMENSIONS,
  METRICS,
  MODELS,
  TOP_LISTS,
  WIDGET_KINDS,
  type Dashboard,
  type DimensionName,
  type MetricName,
  type ModelName,
  type TopListName,
  type Widget,
  type WidgetKind,
} from './types';
import { widgetTitle, type WidgetView } from './widgets';

export interface EditorHost {
  readonly dash: Dashboard;
  /** The layout changed; `rebuild`: the grid must be drawn again (else only titles changed). */
  layoutChanged(rebuild: boolean): void;
  save(): void;
  cancelEdit(): void;
}

const options = <T extends string>(values: readonly T[], labels: Record<T, string>) =>
  values.map((v) => ({ value: v, label: labels[v] }));

export class Editor {
  readonly bar: HTMLElement;
  readonly status: HTMLElement;
  readonly saveButton: HTMLButtonElement;
  private readonly titleInput: HTMLInputElement;
  private readonly addKind: HTMLSelectElement;
  private readonly addButton: HTMLButtonElement;
  private dragged: string | null = null;

  constructor(private readonly host: EditorHost) {
    const titleId = uid('dash-title');
    const kindId = uid('add-kind');
    this.titleInput = h('input', {
      id: titleId,
      type: 'text',
      maxlength: MAX_TITLE,
      required: true,
      'data-testid': 'dashboard-title-input',
      oninput: () => {
        this.host.dash.title = this.titleInput.value;
        this.host.layoutChanged(false);
      },
    });
    this.addKind = select({ id: kindId, 'data-testid': 'add-widget-kind' }, options(WIDGET_KINDS, KIND_LABELS), 'kpi');
    this.addButton = h('button', { type: 'button', 'data-testid': 'add-widget', onclick: () => this.add() }, 'Add widget');
    this.saveButton = h('button', { type: 'button', class: 'primary', 'data-testid': 'layout-save', onclick: () => this.host.save() }, 'Save');
    this.status = h('span', { class: 'edit-status', role: 'status', 'data-testid': 'save-status' });
    this.bar = h(
      'section',
      { class: 'edit-bar', hidden: true, 'aria-label': 'Edit layout', 'data-testid': 'edit-bar' },
      h('div', { class: 'field' }, h('label', { for: titleId }, 'Dashboard title'), this.titleInput),
      h('div', { class: 'field' }, h('label', { for: kindId }, 'New widget'), this.addKind, this.addButton),
      h(
        'div',
        { class: 'field end' },
        this.status,
        this.saveButton,
        h('button', { type: 'button', 'data-testid': 'layout-cancel', onclick: () => this.host.cancelEdit() }, 'Cancel'),
      ),
    );
  }

  /** Fills the edit bar from the working dashboard. */
  sync(): void {
    if (document.activeElement !== this.titleInput) this.titleInput.value = this.host.dash.title;
    const full = this.host.dash.layout.widgets.length >= MAX_WIDGETS;
    this.addButton.disabled = full;
    this.addButton.title = full ? `A dashboard holds at most ${MAX_WIDGETS} widgets` : '';
  }

  private add(): void {
    const layout = this.host.dash.layout;
    if (layout.widgets.length >= MAX_WIDGETS) return;
    const kind = this.addKind.value as WidgetKind;
    layout.widgets.push(widgetOfKind(newWidgetId(layout, kind), kind));
    this.host.layoutChanged(true);
  }

  /** Puts the editing tools on a widget of the grid. */
  attach(view: WidgetView, index: number): void {
    const widgets = this.host.dash.layout.widgets;
    const w = view.widget;
    const name = widgetTitle(w);
    const tools = view.tools;
    tools.hidden = false;
    tools.replaceChildren();

    const field = (label: string, control: HTMLElement) => {
      const id = uid('wf');
      control.id = id;
      return h('div', { class: 'tool' }, h('label', { for: id }, label), control);
    };
    const change = (apply: (w: Widget) => void) => () => {
      apply(w);
      this.host.layoutChanged(true);
    };

    const titleInput = h('input', {
      type: 'text',
      maxlength: MAX_TITLE,
      placeholder: widgetTitle({ ...w, title: undefined }),
      value: w.title ?? '',
      'data-testid': 'widget-title-input',
    });
    titleInput.addEventListener('input', () => {
      const t = titleInput.value.trim();
      if (t) w.title = t;
      else delete w.title;
      view.head.querySelector('.widget-title')!.textContent = widgetTitle(w);
      this.host.layoutChanged(false);
    });
    tools.append(field('Title', titleInput));

    const kindSelect = select({ 'data-testid': 'widget-kind' }, options(WIDGET_KINDS, KIND_LABELS), w.kind);
    kindSelect.addEventListener('change', () => {
      const next = widgetOfKind(w.id, kindSelect.value as WidgetKind, { ...w, title: w.title });
      widgets[index] = next;
      this.host.layoutChanged(true);
    });
    tools.append(field('Kind', kindSelect));

    if (w.metric !== undefined) {
      const s = select({ 'data-testid': 'widget-metric' }, options(METRICS, METRIC_LABELS), w.metric);
      s.addEventListener('change', change((x) => (x.metric = s.value as MetricName)));
      tools.append(field('Metric', s));
    }
    if (w.dimension !== undefined) {
      const s = select({ 'data-testid': 'widget-dimension' }, options(DIMENSIONS, DIMENSION_LABELS), w.dimension);
      s.addEventListener('change', change((x) => (x.dimension = s.value as DimensionName)));
      tools.append(field('Dimension', s));
    }
    if (w.list !== undefined) {
      const s = select({ 'data-testid': 'widget-list' }, options(TOP_LISTS, TOP_LABELS), w.list);
      s.addEventListener('change', change((x) => (x.list = s.value as TopListName)));
      tools.append(field('List', s));
    }
    if (w.model !== undefined) {
      const s = select({ 'data-testid': 'widget-model' }, options(MODELS, MODEL_LABELS), w.model);
      s.addEventListener('change', change((x) => (x.model = s.value as ModelName)));
      tools.append(field('Attribution', s));
    }
    if (w.funnel !== undefined) {
      const input = h('input', { type: 'text', maxlength: 40, pattern: FUNNEL_NAME.source, value: w.funnel, 'data-testid': 'widget-funnel', title: "The funnel's name: a-z, 0-9 and '-'" });
      input.addEventListener('change', () => {
        const name = input.value.trim();
        if (!FUNNEL_NAME.test(name)) {
          input.setCustomValidity("A funnel name is 1 to 40 characters of a-z, 0-9 and '-'");
          input.reportValidity();
          return;
        }
        input.setCustomValidity('');
        change((x) => (x.funnel = name))();
      });
      tools.append(field('Funnel', input));
    }
    const width = select(
      { 'data-testid': 'widget-width' },
      [1, 2, 3, 4].map((n) => ({ value: String(n), label: `${n} of 4 columns` })),
      String(w.width),
    );
    width.addEventListener('change', change((x) => (x.width = Number(width.value))));
    tools.append(field('Width', width));
    const height = select(
      { 'data-testid': 'widget-height' },
      [1, 2, 3].map((n) => ({ value: String(n), label: `${n} ${n === 1 ? 'row' : 'rows'}` })),
      String(w.height),
    );
    height.addEventListener('change', change((x) => (x.height = Number(height.value))));
    tools.append(field('Height', height));

    const move = (to: number) => () => {
      moveWidget(this.host.dash.layout, index, to);
      this.host.layoutChanged(true);
    };
    const handle = h('span', { class: 'drag-handle', draggable: 'true', title: 'Drag to move', 'aria-hidden': 'true' }, '⠿');
    tools.append(
      h(
        'div',
        { class: 'tool buttons' },
        handle,
        h('button', { type: 'button', 'aria-label': `Move ${name} earlier`, title: 'Move earlier', disabled: index === 0, 'data-testid': 'widget-move-earlier', 'data-focus-key': `earlier:${w.id}`, onclick: move(index - 1) }, '←'),
        h('button', { type: 'button', 'aria-label': `Move ${name} later`, title: 'Move later', disabled: index === widgets.length - 1, 'data-testid': 'widget-move-later', 'data-focus-key': `later:${w.id}`, onclick: move(index + 1) }, '→'),
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            'aria-label': `Remove ${name}`,
            'data-testid': 'widget-remove',
            onclick: () => {
              widgets.splice(index, 1);
              this.host.layoutChanged(true);
            },
          },
          'Remove',
        ),
      ),
    );

    // Drag and drop by the handle; the buttons above do the same from the keyboard.
    handle.addEventListener('dragstart', (e) => {
      this.dragged = w.id;
      e.dataTransfer?.setData('text/plain', w.id);
      if (e.dataTransfer) e.dataTransfer.effectAllowed = 'move';
      view.el.classList.add('dragging');
    });
    handle.addEventListener('dragend', () => {
      this.dragged = null;
      view.el.classList.remove('dragging');
    });
    view.el.addEventListener('dragover', (e) => {
      if (this.dragged === null || this.dragged === w.id) return;
      e.preventDefault();
      view.el.classList.add('drop-target');
    });
    view.el.addEventListener('dragleave', () => view.el.classList.remove('drop-target'));
    view.el.addEventListener('drop', (e) => {
      e.preventDefault();
      view.el.classList.remove('drop-target');
      const from = widgets.findIndex((x) => x.id === this.dragged);
      this.dragged = null;
      if (from >= 0 && from !== index) {
        moveWidget(this.host.dash.layout, from, index);
        this.host.layoutChanged(true);
      }
    });
  }
}
