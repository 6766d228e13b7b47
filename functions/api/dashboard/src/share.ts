// The share and embed panel (read keys only): make a read-only link with an expiry and fixed
// filters, show it and an iframe snippet, list the links made so far and revoke them.

import { ApiError, type Api } from './api';
import { clear, copyText, h, uid } from './dom';
import { DIMENSION_LABELS, dimensionValueLabel } from './format';
import { formatDateTime } from './tz';
import { DIMENSIONS, type Filters, type NewShareToken, type ShareToken } from './types';

export interface ShareHost {
  readonly api: Api;
  readonly tenant: number;
  readonly zone: string;
  readonly filters: Filters;
  /** The query (range, dashboard) the shared view opens with. */
  shareQuery(): string;
}

const EXPIRIES = [
  { seconds: 3600, label: '1 hour' },
  { seconds: 86400, label: '1 day' },
  { seconds: 7 * 86400, label: '7 days' },
  { seconds: 30 * 86400, label: '30 days' },
];

/** Share tokens fix only well-formed values: no "(none)" filters. */
function fixable(dimension: string, value: string): boolean {
  if (value.trim() === '') return false;
  if (dimension === 'country') return /^[A-Z]{2}$/.test(value);
  if (dimension === 'event_type') return /^[a-z0-9_]{1,64}$/.test(value);
  return value.length <= 256;
}

function filtersText(filters: Record<string, string>): string {
  const parts = Object.entries(filters).map(
    ([d, v]) => `${DIMENSION_LABELS[d as keyof typeof DIMENSION_LABELS] ?? d}: ${dimensionValueLabel(v)}`,
  );
  return parts.length ? parts.join(', ') : 'none';
}

export class SharePanel {
  readonly el: HTMLElement;
  private readonly form: HTMLFormElement;
  private readonly expiry: HTMLSelectElement;
  private readonly label: HTMLInputElement;
  private readonly filterBox: HTMLElement;
  private readonly result: HTMLElement;
  private readonly list: HTMLElement;
  private readonly message: HTMLElement;

  constructor(private readonly host: ShareHost) {
    const expiryId = uid('expiry');
    const labelId = uid('label');
    this.expiry = h('select', { id: expiryId, 'data-testid': 'share-expiry' });
    for (const e of EXPIRIES) {
      const o = h('option', { value: String(e.seconds) }, e.label);
      o.selected = e.seconds === 86400;
      this.expiry.append(o);
    }
    this.label = h('input', { id: labelId, type: 'text', maxlength: 200, placeholder: 'e.g. Agency weekly report', 'data-testid': 'share-label' });
    this.filterBox = h('fieldset', { class: 'share-filters' });
    this.message = h('p', { class: 'error', role: 'alert' });
    this.form = h(
      'form',
      { class: 'share-form', 'data-testid': 'share-form' },
      h('div', { class: 'field' }, h('label', { for: expiryId }, 'Expires after'), this.expiry),
      h('div', { class: 'field grow' }, h('label', { for: labelId }, 'Label (optional)'), this.label),
      this.filterBox,
      h('button', { type: 'submit', class: 'primary', 'data-testid': 'share-create' }, 'Create share link'),
    );
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      void this.create();
    });
    this.result = h('div', { class: 'share-result', 'data-testid': 'share-result' });
    this.list = h('div', { class: 'share-list' });
    this.el = h(
      'section',
      { class: 'panel share-panel', hidden: true, id: uid('share-panel'), 'aria-labelledby': 'share-heading', 'data-testid': 'share-panel' },
      h('h2', { id: 'share-heading' }, 'Share and embed'),
      h('p', { class: 'muted' }, 'A share link opens a read-only view of this dashboard, limited to the fixed filters, until it expires or is revoked.'),
      this.form,
      this.message,
      this.result,
      h('h3', {}, 'Share links'),
      this.list,
    );
  }

  get open(): boolean {
    return !this.el.hidden;
  }

  show(open: boolean): void {
    this.el.hidden = !open;
    if (open) {
      this.renderFilters();
      void this.refreshList();
    }
  }

  private renderFilters(): void {
    clear(this.filterBox);
    this.filterBox.append(h('legend', {}, 'Fixed filters (the viewer cannot remove them)'));
    let any = false;
    for (const d of DIMENSIONS) {
      const value = this.host.filters[d];
      if (value === undefined) continue;
      any = true;
      const ok = fixable(d, value);
      const id = uid('fix');
      this.filterBox.append(
        h(
          'div',
          { class: 'check' },
          h('input', { id, type: 'checkbox', checked: ok, disabled: !ok, 'data-dimension': d, 'data-value': value, 'data-testid': 'share-fixed-filter' }),
          h('label', { for: id }, `${DIMENSION_LABELS[d]}: ${dimensionValueLabel(value)}`, ok ? '' : ' (cannot be fixed)'),
        ),
      );
    }
    if (!any) this.filterBox.append(h('p', { class: 'muted' }, 'No filters are active: the link shows all of this tenant’s data. Filter the dashboard first to share a slice.'));
  }

  private async create(): Promise<void> {
    this.message.textContent = '';
    const filters: Record<string, string> = {};
    for (const box of this.filterBox.querySelectorAll<HTMLInputElement>('input[type=checkbox]')) {
      if (box.checked && box.dataset.dimension && box.dataset.value !== undefined) filters[box.dataset.dimension] = box.dataset.value;
    }
    const button = this.form.querySelector('button[type=submit]') as HTMLButtonElement;
    button.disabled = true;
    try {
      const token = await this.host.api.createShareToken(this.host.tenant, {
        expires_in_seconds: Number(this.expiry.value),
        filters,
        label: this.label.value.trim(),
      });
      this.showResult(token);
      await this.refreshList();
    } catch (e) {
      this.message.textContent = e instanceof ApiError ? e.message : String(e);
    } finally {
      button.disabled = false;
    }
  }

  private showResult(token: NewShareToken): void {
    const origin = window.location.origin;
    const dir = new URL('./', window.location.href).pathname;
    const query = this.host.shareQuery();
    const fragment = `#share=${encodeURIComponent(token.token)}`;
    const link = `${origin}${dir}${query}${fragment}`;
    const embed = `${origin}${dir}embed${query}${fragment}`;
    const snippet = `<iframe src="${embed}" title="ReMarketable dashboard" width="100%" height="800" style="border:0" loading="lazy" referrerpolicy="no-referrer"></iframe>`;
    const linkId = uid('link');
    const snippetId = uid('snippet');
    const linkInput = h('input', { id: linkId, type: 'text', readonly: true, value: link, 'data-testid': 'share-link' });
    const snippetArea = h('textarea', { id: snippetId, readonly: true, rows: 3, 'data-testid': 'share-iframe' }, snippet);
    const copied = h('span', { class: 'muted', role: 'status' });
    const copy = (text: string, from: HTMLInputElement | HTMLTextAreaElement) => async () => {
      copied.textContent = (await copyText(text, from)) ? 'Copied.' : 'Press Ctrl+C to copy.';
    };
    clear(this.result);
    this.result.append(
      h('p', {}, `Link created; it expires ${formatDateTime(Date.parse(token.expires_at), this.host.zone)}. Fixed filters: ${filtersText(token.filters)}. It is shown only now: copy it.`),
      h('div', { class: 'field grow' }, h('label', { for: linkId }, 'Share link'), linkInput, h('button', { type: 'button', 'data-testid': 'copy-link', onclick: copy(link, linkInput) }, 'Copy link')),
      h('div', { class: 'field grow' }, h('label', { for: snippetId }, 'Embed (iframe)'), snippetArea, h('button', { type: 'button', 'data-testid': 'copy-iframe', onclick: copy(snippet, snippetArea) }, 'Copy snippet')),
      copied,
    );
  }

  async refreshList(): Promise<void> {
    let tokens: ShareToken[];
    try {
      tokens = await this.host.api.shareTokens(this.host.tenant);
    } catch (e) {
      clear(this.list);
      this.list.append(h('p', { class: 'error' }, e instanceof ApiError ? e.message : String(e)));
      return;
    }
    clear(this.list);
    if (tokens.length === 0) {
      this.list.append(h('p', { class: 'muted' }, 'No share links yet.'));
      return;
    }
    const now = Date.now();
    tokens.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at));
    const zone = this.host.zone;
    const rows = tokens.map((t) => {
      const expired = Date.parse(t.expires_at) <= now;
      const status = t.revoked_at ? 'revoked' : expired ? 'expired' : 'active';
      return h(
        'tr',
        { 'data-testid': 'share-row', 'data-token-id': t.token_id, 'data-status': status },
        h('td', {}, t.label || h('span', { class: 'muted' }, '(no label)')),
        h('td', {}, filtersText(t.filters)),
        h('td', { class: 'nowrap' }, formatDateTime(Date.parse(t.created_at), zone)),
        h('td', { class: 'nowrap' }, formatDateTime(Date.parse(t.expires_at), zone)),
        h('td', {}, status),
        h(
          'td',
          {},
          status === 'active'
            ? h(
                'button',
                {
                  type: 'button',
                  class: 'danger',
                  'data-testid': 'share-revoke',
                  'aria-label': `Revoke share link ${t.label || t.token_id}`,
                  onclick: (e: Event) => void this.revoke(t, e.currentTarget as HTMLButtonElement),
                },
                'Revoke',
              )
            : null,
        ),
      );
    });
    this.list.append(
      h(
        'div',
        { class: 'table-scroll' },
        h(
          'table',
          {},
          h('thead', {}, h('tr', {}, ...['Label', 'Fixed filters', 'Created', 'Expires', 'Status', ''].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, rows),
        ),
      ),
    );
  }

  private async revoke(token: ShareToken, button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    try {
      await this.host.api.revokeShareToken(this.host.tenant, token.token_id);
      this.message.textContent = '';
    } catch (e) {
      this.message.textContent = e instanceof ApiError ? e.message : String(e);
    }
    await this.refreshList();
  }
}
