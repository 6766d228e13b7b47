// The dashboard picker: switch between a tenant's named dashboards, make a new one, delete one.

import { h, uid } from './dom';
import { DASHBOARD_NAME } from './state';
import type { Dashboard } from './types';

export interface PickerHost {
  readonly dashboards: Dashboard[];
  readonly dash: Dashboard;
  readonly editing: boolean;
  readonly canEdit: boolean;
  switchTo(name: string): void;
  create(name: string, title: string): Promise<string | null>;
  remove(): Promise<string | null>;
}

export class Picker {
  readonly el: HTMLElement;
  /** The forms for a new dashboard and for confirming a deletion, shown under the header. */
  readonly forms: HTMLElement;
  private readonly selectEl: HTMLSelectElement;
  private readonly newButton: HTMLButtonElement | null = null;
  private readonly deleteButton: HTMLButtonElement | null = null;
  private readonly newForm: HTMLFormElement;
  private readonly confirmBox: HTMLElement;
  private readonly newError: HTMLElement;
  private readonly confirmError: HTMLElement;
  private readonly confirmText: HTMLElement;

  constructor(private readonly host: PickerHost) {
    const selectId = uid('dash');
    this.selectEl = h('select', {
      id: selectId,
      'data-testid': 'dashboard-select',
      onchange: () => host.switchTo(this.selectEl.value),
    });
    const nameId = uid('new-name');
    const titleId = uid('new-title');
    const nameInput = h('input', {
      id: nameId,
      type: 'text',
      required: true,
      maxlength: 40,
      pattern: '[a-z0-9][a-z0-9\\-]{0,39}',
      placeholder: 'e.g. campaigns',
      'aria-describedby': `${nameId}-hint`,
      'data-testid': 'new-dashboard-name',
    });
    const titleInput = h('input', { id: titleId, type: 'text', required: true, maxlength: 80, placeholder: 'e.g. Campaigns', 'data-testid': 'new-dashboard-title' });
    this.newError = h('p', { class: 'error', role: 'alert' });
    this.newForm = h(
      'form',
      { class: 'panel inline-form', hidden: true, 'aria-label': 'New dashboard', 'data-testid': 'new-dashboard-form' },
      h('div', { class: 'field' }, h('label', { for: nameId }, 'Name'), nameInput),
      h('span', { id: `${nameId}-hint`, class: 'muted hint' }, 'lower-case letters, digits and dashes; used in the address'),
      h('div', { class: 'field' }, h('label', { for: titleId }, 'Title'), titleInput),
      h('button', { type: 'submit', class: 'primary', 'data-testid': 'new-dashboard-create' }, 'Create'),
      h('button', { type: 'button', onclick: () => this.showNew(false) }, 'Cancel'),
      this.newError,
    );
    this.newForm.addEventListener('submit', async (e) => {
      e.preventDefault();
      const name = nameInput.value.trim();
      const title = titleInput.value.trim();
      if (!DASHBOARD_NAME.test(name)) {
        this.newError.textContent = 'The name is 1 to 40 lower-case letters, digits or dashes, starting with a letter or digit.';
        return;
      }
      if (!title || title.length > 80) {
        this.newError.textContent = 'The title is 1 to 80 characters.';
        return;
      }
      const problem = await host.create(name, title);
      this.newError.textContent = problem ?? '';
      if (!problem) {
        nameInput.value = '';
        titleInput.value = '';
        this.showNew(false);
      }
    });
    this.confirmText = h('p', {});
    this.confirmError = h('p', { class: 'error', role: 'alert' });
    this.confirmBox = h(
      'div',
      { class: 'panel inline-form', hidden: true, role: 'group', 'aria-label': 'Delete dashboard', 'data-testid': 'delete-dashboard-confirm' },
      this.confirmText,
      h(
        'button',
        {
          type: 'button',
          class: 'danger',
          'data-testid': 'delete-dashboard-yes',
          onclick: async () => {
            const problem = await host.remove();
            this.confirmError.textContent = problem ?? '';
            if (!problem) this.confirmBox.hidden = true;
          },
        },
        'Delete',
      ),
      h('button', { type: 'button', onclick: () => (this.confirmBox.hidden = true) }, 'Keep it'),
      this.confirmError,
    );
    const parts: HTMLElement[] = [h('label', { for: selectId }, 'Dashboard'), this.selectEl];
    if (host.canEdit) {
      this.newButton = h('button', { type: 'button', 'data-testid': 'new-dashboard', 'aria-expanded': 'false', onclick: () => this.showNew(this.newForm.hidden) }, 'New');
      this.deleteButton = h(
        'button',
        {
          type: 'button',
          'data-testid': 'delete-dashboard',
          onclick: () => {
            this.confirmText.textContent = `Delete the dashboard “${host.dash.title}” for everyone with access to this tenant?`;
            this.confirmError.textContent = '';
            this.confirmBox.hidden = false;
          },
        },
        'Delete',
      );
      parts.push(this.newButton, this.deleteButton);
    }
    this.el = h('div', { class: 'field picker' }, parts);
    this.forms = h('div', { class: 'picker-forms' }, this.newForm, this.confirmBox);
    this.update();
  }

  private showNew(open: boolean): void {
    this.newForm.hidden = !open;
    this.newButton?.setAttribute('aria-expanded', String(open));
    if (open) {
      this.newError.textContent = '';
      (this.newForm.querySelector('input') as HTMLInputElement).focus();
    }
  }

  update(): void {
    const { dashboards, dash, editing } = this.host;
    const list = dashboards.some((d) => d.name === 'main') ? [...dashboards] : [{ name: 'main', title: 'Main (default)' } as Dashboard, ...dashboards];
    if (!list.some((d) => d.name === dash.name)) list.push(dash);
    this.selectEl.replaceChildren(
      ...list.map((d) => {
        const o = h('option', { value: d.name }, d.name === dash.name ? dash.title || d.name : d.title || d.name);
        o.selected = d.name === dash.name;
        return o;
      }),
    );
    this.selectEl.disabled = editing;
    this.selectEl.title = editing ? 'Save or cancel your changes to switch dashboards' : '';
    if (this.newButton) this.newButton.disabled = editing;
    if (this.deleteButton) {
      this.deleteButton.disabled = editing || dash.version === null;
      this.deleteButton.title = dash.version === null ? 'This dashboard is not saved yet' : '';
    }
    if (editing) {
      this.newForm.hidden = true;
      this.confirmBox.hidden = true;
    }
  }
}
