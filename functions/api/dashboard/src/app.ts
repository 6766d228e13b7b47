// The dashboard page: header, view controls, panels and the widget grid, refreshed live.

import { Api, ApiError, isAbort } from './api';
import { Controls, type ControlsHost } from './controls';
import { Picker, type PickerHost } from './dashboards';
import { h } from './dom';
import { Editor, type EditorHost } from './editor';
import { keepFocus } from './focus';
import { cleanLayout, defaultDashboard, defaultLayout, layoutProblem, sameLayout } from './layout';
import { Live, type Trigger } from './live';
import { SharePanel, type ShareHost } from './share';
import {
  DEFAULT_DASHBOARD,
  DEFAULT_REFRESH_SECONDS,
  clampRefresh,
  parseState,
  reportQuery,
  stateToSearch,
  writeState,
  type RangeChoice,
  type ViewState,
} from './state';
import { formatDateTime } from './tz';
import { DIMENSIONS, type Dashboard, type DimensionName, type Identity } from './types';
import { fetchNeed, needOf, WidgetView, type Need, type Outcome, type RenderContext } from './widgets';

/** full: a read key; share: a share link; embed: a share link inside someone's page. */
export type Mode = 'full' | 'share' | 'embed';

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

function queryString(q: Record<string, string | number | undefined>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined) p.set(k, String(v));
  return p.toString();
}

export class App implements ControlsHost, EditorHost, ShareHost, PickerHost {
  readonly tenant: number;
  readonly fixed: Record<string, string>;
  readonly canEdit: boolean;
  state: ViewState;
  dashboards: Dashboard[];
  dash: Dashboard;
  editing = false;
  readonly live: Live;
  private saved: Dashboard;
  private views: WidgetView[] = [];
  private cache = new Map<string, Outcome>();
  private errorBound: number | null = null;
  private readonly controls: Controls;
  private readonly picker: Picker | null;
  private readonly editor: Editor | null;
  private readonly sharePanel: SharePanel | null;
  private readonly grid: HTMLElement;
  private readonly errorBanner: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly conflictBox: HTMLElement;
  private readonly heading: HTMLElement;
  private editButton: HTMLButtonElement | null = null;
  private shareButton: HTMLButtonElement | null = null;
  private readonly ticker: number;

  constructor(
    root: HTMLElement,
    readonly api: Api,
    private readonly identity: Identity,
    dashboards: Dashboard[],
    private readonly mode: Mode,
    readonly zone: string,
    /** Leaves the page: back to sign-in (keys) or to an error page (share links). */
    private readonly onRefused: (error: ApiError) => void,
    private readonly onSignOut: () => void,
  ) {
    this.tenant = identity.tenant_id;
    this.fixed = { ...identity.fixed_filters };
    this.canEdit = mode === 'full' && !identity.read_only;
    this.dashboards = dashboards;
    this.state = this.stateFromUrl();
    const first = this.find(this.state.dashboard) ?? this.find(DEFAULT_DASHBOARD) ?? defaultDashboard(DEFAULT_DASHBOARD, 'Main');
    const asked = this.state.dashboard;
    this.saved = clone(first);
    this.dash = clone(first);
    this.state.dashboard = first.name;

    this.live = new Live(this.interval(), (signal, trigger) => this.cycle(signal, trigger), () => this.controls?.update());
    this.controls = new Controls(this);
    this.picker = mode === 'embed' ? null : new Picker(this);
    this.editor = this.canEdit ? new Editor(this) : null;
    this.sharePanel = this.canEdit ? new SharePanel(this) : null;
    this.grid = h('main', { class: 'grid', id: 'grid', 'data-testid': 'grid', 'aria-label': 'Widgets' });
    this.errorBanner = h('p', { class: 'banner error', role: 'alert', hidden: true, 'data-testid': 'error-banner' });
    this.notice = h('p', { class: 'banner notice', role: 'status', hidden: true, 'data-testid': 'notice' });
    this.conflictBox = h('div', { class: 'panel conflict', hidden: true, role: 'alert', 'data-testid': 'conflict' });
    this.heading = h('h1', { class: 'dash-title', 'data-testid': 'dashboard-title' });

    root.replaceChildren(this.header(), this.controls.toolbar, this.controls.chips, this.errorBanner, this.notice);
    if (this.picker) root.append(this.picker.forms);
    if (this.sharePanel) root.append(this.sharePanel.el);
    if (this.editor) root.append(this.editor.bar);
    root.append(this.conflictBox, this.grid);
    root.classList.toggle('embed', mode === 'embed');
    if (asked !== first.name) this.showNotice(`There is no dashboard named “${asked}”; showing “${first.title}”.`);

    writeState(this.state, 'replace');
    window.addEventListener('popstate', this.onPopState);
    window.addEventListener('beforeunload', this.onBeforeUnload);
    this.ticker = window.setInterval(() => this.controls.tick(), 1000);
    this.updateChrome();
    this.buildGrid();
  }

  destroy(): void {
    this.live.stop();
    window.clearInterval(this.ticker);
    window.removeEventListener('popstate', this.onPopState);
    window.removeEventListener('beforeunload', this.onBeforeUnload);
    for (const v of this.views) v.dispose();
  }

  // ---- view state ------------------------------------------------------------------------

  private stateFromUrl(): ViewState {
    const state = parseState(window.location.search);
    // A filter on a fixed dimension would contradict the share link.
    for (const d of DIMENSIONS) if (this.fixed[d] !== undefined) delete state.filters[d];
    return state;
  }

  private interval(): number {
    return this.state.refresh ?? clampRefresh(this.dash?.layout.refresh_seconds ?? DEFAULT_REFRESH_SECONDS);
  }

  get filters() {
    return this.state.filters;
  }

  private find(name: string): Dashboard | undefined {
    return this.dashboards.find((d) => d.name === name);
  }

  private viewChanged(how: 'push' | 'replace'): void {
    writeState(this.state, how);
    this.controls.update();
    for (const v of this.views) v.body.setAttribute('aria-busy', 'true');
    this.live.refreshNow('user');
  }

  setRange(range: RangeChoice): void {
    this.state.range = range;
    this.viewChanged('push');
  }

  setRefresh(seconds: number): void {
    this.state.refresh = clampRefresh(seconds);
    writeState(this.state, 'replace');
    this.live.setInterval(this.state.refresh);
  }

  toggleFilter(dimension: DimensionName, value: string): void {
    if (this.fixed[dimension] !== undefined) return;
    if (this.state.filters[dimension] === value) delete this.state.filters[dimension];
    else this.state.filters[dimension] = value;
    this.viewChanged('push');
  }

  removeFilter(dimension: DimensionName): void {
    delete this.state.filters[dimension];
    this.viewChanged('push');
  }

  shareQuery(): string {
    return stateToSearch({ range: this.state.range, filters: {}, dashboard: this.dash.name, refresh: null });
  }

  private readonly onPopState = (): void => {
    const next = this.stateFromUrl();
    if (next.dashboard !== this.dash.name) {
      if (this.editing) next.dashboard = this.dash.name;
      else this.load(next.dashboard);
    }
    this.state = next;
    writeState(this.state, 'replace');
    this.live.setInterval(this.interval());
    this.controls.update();
    this.live.refreshNow('user');
  };

  private readonly onBeforeUnload = (e: BeforeUnloadEvent): void => {
    if (this.editing && this.dirty()) e.preventDefault();
  };

  // ---- header ----------------------------------------------------------------------------

  private header(): HTMLElement {
    const name = this.identity.tenant_name ?? `Tenant ${this.tenant}`;
    const brand = h(
      'div',
      { class: 'brand' },
      h('span', { class: 'logo', 'aria-hidden': 'true' }, '◆'),
      h('span', { class: 'product' }, 'ReMarketable'),
      h('span', { class: 'tenant', 'data-testid': 'tenant-name' }, name),
    );
    const top = h('header', { class: 'topbar' }, brand, this.heading);
    // The dashboard picker leads the view controls.
    if (this.picker) this.controls.toolbar.prepend(this.picker.el);
    if (this.mode !== 'full') {
      const expires = this.identity.expires_at ? formatDateTime(Date.parse(this.identity.expires_at), this.zone) : null;
      top.append(
        h(
          'p',
          { class: 'share-badge', 'data-testid': 'share-banner' },
          h('strong', {}, 'Shared view'),
          ' · read-only',
          expires ? ` · expires ${expires}` : '',
        ),
      );
    }
    if (this.mode === 'full') {
      const actions = h('div', { class: 'actions' });
      if (this.canEdit) {
        this.editButton = h('button', { type: 'button', 'aria-pressed': 'false', 'data-testid': 'edit-toggle', onclick: () => this.setEditing(!this.editing) }, 'Edit layout');
        this.shareButton = h(
          'button',
          {
            type: 'button',
            'aria-expanded': 'false',
            'aria-controls': this.sharePanel?.el.id,
            'data-testid': 'share-toggle',
            onclick: () => {
              const open = !this.sharePanel?.open;
              this.sharePanel?.show(open);
              this.shareButton?.setAttribute('aria-expanded', String(open));
            },
          },
          'Share',
        );
        actions.append(this.editButton, this.shareButton);
      }
      actions.append(h('button', { type: 'button', 'data-testid': 'sign-out', onclick: () => this.onSignOut() }, 'Sign out'));
      top.append(actions);
    }
    return top;
  }

  private updateChrome(): void {
    this.heading.textContent = this.dash.title || this.dash.name;
    document.title = `${this.dash.title || this.dash.name} · ${this.identity.tenant_name ?? `Tenant ${this.tenant}`} · ReMarketable`;
    this.picker?.update();
    this.editor?.sync();
    if (this.editButton) {
      this.editButton.textContent = this.editing ? 'Editing…' : 'Edit layout';
      this.editButton.setAttribute('aria-pressed', String(this.editing));
      this.editButton.disabled = this.editing;
    }
    if (this.editor) {
      this.editor.bar.hidden = !this.editing;
      const dirty = this.editing && this.dirty();
      if (this.editing) this.editor.status.textContent = dirty ? 'Unsaved changes' : 'No changes';
      this.editor.saveButton.disabled = !dirty;
    }
  }

  // ---- dashboards --------------------------------------------------------------------------

  /** Shows the dashboard `name` (the default one when there is no such dashboard). */
  private load(name: string): void {
    const found = this.find(name) ?? this.find(DEFAULT_DASHBOARD) ?? defaultDashboard(DEFAULT_DASHBOARD, 'Main');
    this.showNotice(found.name !== name ? `There is no dashboard named “${name}”; showing “${found.title}”.` : null);
    this.saved = clone(found);
    this.dash = clone(found);
    this.state.dashboard = found.name;
    this.conflictBox.hidden = true;
    this.live.setInterval(this.interval());
    this.updateChrome();
    this.buildGrid();
  }

  switchTo(name: string): void {
    if (this.editing) return;
    this.load(name);
    this.viewChanged('push');
  }

  async create(name: string, title: string): Promise<string | null> {
    if (this.find(name)) return `A dashboard named “${name}” exists already.`;
    try {
      const made = await this.api.saveDashboard(this.tenant, name, { title, layout: cleanLayout(defaultLayout()) });
      this.dashboards.push(made);
      this.switchTo(made.name);
      return null;
    } catch (e) {
      return this.problem(e);
    }
  }

  async remove(): Promise<string | null> {
    const name = this.dash.name;
    try {
      await this.api.deleteDashboard(this.tenant, name);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) return this.problem(e);
    }
    this.dashboards = this.dashboards.filter((d) => d.name !== name);
    this.switchTo(DEFAULT_DASHBOARD);
    this.controls.announce(`Dashboard ${name} deleted.`);
    return null;
  }

  // ---- editing -----------------------------------------------------------------------------

  private dirty(): boolean {
    return this.dash.title !== this.saved.title || !sameLayout(this.dash.layout, this.saved.layout) || this.saved.version === null;
  }

  setEditing(on: boolean): void {
    if (!this.canEdit) return;
    this.editing = on;
    this.updateChrome();
    this.buildGrid();
    if (on) (this.editor?.bar.querySelector('input') as HTMLInputElement | null)?.focus();
  }

  layoutChanged(rebuild: boolean): void {
    this.updateChrome();
    if (rebuild) this.buildGrid();
  }

  cancelEdit(): void {
    this.dash = clone(this.saved);
    this.conflictBox.hidden = true;
    this.setEditing(false);
    this.editButton?.focus();
  }

  save(): void {
    void this.saveAs(this.saved.version);
  }

  private async saveAs(expected: number | null): Promise<void> {
    if (!this.editor) return;
    const layout = cleanLayout(this.dash.layout);
    layout.refresh_seconds = this.live.intervalSeconds;
    const title = this.dash.title.trim();
    const problem = !title ? 'The dashboard needs a title.' : title.length > 80 ? 'The title is at most 80 characters.' : layoutProblem(layout);
    if (problem) {
      this.editor.status.textContent = problem;
      return;
    }
    this.editor.status.textContent = 'Saving…';
    this.editor.saveButton.disabled = true;
    try {
      const body: { title: string; layout: typeof layout; expected_version?: number } = { title, layout };
      if (expected !== null) body.expected_version = expected;
      const stored = await this.api.saveDashboard(this.tenant, this.dash.name, body);
      this.dashboards = [...this.dashboards.filter((d) => d.name !== stored.name), stored];
      this.saved = clone(stored);
      this.dash = clone(stored);
      this.conflictBox.hidden = true;
      this.setEditing(false);
      this.controls.announce(`Dashboard “${stored.title}” saved.`);
      this.showNotice(null);
      this.editButton?.focus();
    } catch (e) {
      if (e instanceof ApiError && e.code === 'version_conflict') this.showConflict();
      else {
        this.editor.status.textContent = this.problem(e);
        this.updateChromeKeepingStatus();
      }
    }
  }

  private updateChromeKeepingStatus(): void {
    if (this.editor) this.editor.saveButton.disabled = false;
  }

  private showConflict(): void {
    const box = this.conflictBox;
    box.replaceChildren(
      h('p', {}, `Someone else saved “${this.dash.title}” while you were editing. Load their version (your changes are dropped) or overwrite it with yours.`),
      h('button', { type: 'button', 'data-testid': 'conflict-load', onclick: () => void this.resolveConflict(false) }, 'Load their version'),
      h('button', { type: 'button', class: 'danger', 'data-testid': 'conflict-overwrite', onclick: () => void this.resolveConflict(true) }, 'Overwrite with mine'),
    );
    box.hidden = false;
    if (this.editor) {
      this.editor.status.textContent = 'Not saved: edited elsewhere meanwhile';
      this.editor.saveButton.disabled = false;
    }
    (box.querySelector('button') as HTMLButtonElement).focus();
  }

  private async resolveConflict(overwrite: boolean): Promise<void> {
    let latest: Dashboard[];
    try {
      latest = await this.api.dashboards(this.tenant);
    } catch (e) {
      this.showNotice(this.problem(e));
      return;
    }
    this.dashboards = latest;
    const theirs = latest.find((d) => d.name === this.dash.name);
    if (overwrite) {
      await this.saveAs(theirs ? theirs.version : null);
      return;
    }
    this.conflictBox.hidden = true;
    this.editing = false;
    this.load(theirs ? theirs.name : DEFAULT_DASHBOARD);
  }

  // ---- the grid and its data ----------------------------------------------------------------

  private renderContext(): RenderContext {
    return {
      zone: this.zone,
      filters: this.state.filters,
      fixed: this.fixed,
      errorBound: this.errorBound,
      readOnly: !this.canEdit,
      toggleFilter: (d, v) => this.toggleFilter(d, v),
      refresh: () => this.live.refreshNow('user'),
    };
  }

  private needs(): { views: [WidgetView, Need][]; unique: Need[] } {
    const base = reportQuery(this.state, this.fixed);
    const range = reportQuery({ ...this.state, filters: {} }, {});
    const pairs = this.views.map((v) => [v, needOf(v.effective(), base, range, this.fixed)] as [WidgetView, Need]);
    const unique = new Map<string, Need>();
    for (const [, n] of pairs) unique.set(n.key, n);
    return { views: pairs, unique: [...unique.values()] };
  }

  private buildGrid(): void {
    keepFocus(this.grid, () => {
      for (const v of this.views) v.dispose();
      // The delivery ledger covers the whole tenant, so a share link limited to fixed filters
      // may not read it (the API answers 403): its view leaves the ingest widgets out.
      const limited = Object.keys(this.fixed).length > 0;
      this.views = this.dash.layout.widgets
        .filter((w) => !(limited && w.kind === 'ingest'))
        .map((w) => new WidgetView(w));
      this.grid.replaceChildren(...this.views.map((v) => v.el));
      this.grid.classList.toggle('editing', this.editing);
      if (this.editing && this.editor) {
        this.views.forEach((v, i) => {
          this.editor!.attach(v, i);
          for (const el of v.tools.querySelectorAll<HTMLElement>('[data-testid]')) el.dataset.focusKey ??= `${el.dataset.testid}:${v.widget.id}`;
        });
      }
    });
    if (this.views.length === 0) {
      this.grid.append(h('p', { class: 'muted empty' }, this.canEdit ? 'This dashboard has no widgets. Choose “Edit layout” to add some.' : 'This dashboard has no widgets.'));
    }
    // Draw what the last answers already cover; fetch at once if anything is missing.
    const ctx = this.renderContext();
    let missing = false;
    for (const [view, need] of this.needs().views) {
      const outcome = this.cache.get(need.key);
      if (outcome && outcome.ok && outcome.query === queryString(need.query)) view.render(outcome, ctx);
      else missing = true;
    }
    if (missing) this.live.refreshNow('user');
  }

  private async cycle(signal: AbortSignal, trigger: Trigger): Promise<boolean> {
    const { unique } = this.needs();
    const entries = await Promise.all(
      unique.map(async (need): Promise<[string, Outcome]> => {
        const query = queryString(need.query);
        try {
          return [need.key, { ok: true, data: await fetchNeed(this.api, this.tenant, need, signal), query }];
        } catch (e) {
          if (isAbort(e)) throw e;
          return [need.key, { ok: false, error: e instanceof ApiError ? e : new ApiError(0, 'client', String(e)) }];
        }
      }),
    );
    if (signal.aborted) return false;
    this.cache = new Map(entries);
    for (const [, o] of entries) {
      const bound = o.ok ? (o.data as { distinct_counts?: { relative_error_95?: number } }).distinct_counts?.relative_error_95 : undefined;
      if (typeof bound === 'number') this.errorBound = bound;
    }
    const refused = entries.map(([, o]) => o).find((o) => !o.ok && o.error.status === 401);
    if (refused && !refused.ok) {
      this.onRefused(refused.error);
      return false;
    }
    const ctx = this.renderContext();
    for (const [view, need] of this.needs().views) view.render(this.cache.get(need.key), ctx);
    const failures = [...new Set(entries.flatMap(([, o]) => (o.ok ? [] : [o.error.message])))];
    this.showError(failures.length ? `Some widgets could not be updated: ${failures.join('; ')}` : null);
    if (failures.length) this.controls.announce('Update failed.');
    else if (trigger === 'user') this.controls.announce(`Dashboard updated at ${new Date().toLocaleTimeString()}.`);
    return failures.length === 0;
  }

  /** A message about what the person did (not about the data): it stays until the next one. */
  private showNotice(message: string | null): void {
    this.notice.hidden = message === null;
    this.notice.textContent = message ?? '';
  }

  private showError(message: string | null): void {
    this.errorBanner.hidden = message === null;
    this.errorBanner.textContent = message ?? '';
  }

  private problem(e: unknown): string {
    if (e instanceof ApiError) {
      if (e.status === 401) this.onRefused(e);
      return e.message;
    }
    return String(e);
  }
}
