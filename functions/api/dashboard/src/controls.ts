// The view controls: time range (custom ranges in the tenant's zone), refresh interval and
// pause, "updated … ago", and the filter chips.

import { clear, h, select, srOnly, uid } from './dom';
import { DIMENSION_LABELS, dimensionValueLabel, formatAgo, formatDuration } from './format';
import type { Live } from './live';
import { isoInstant, type RangeChoice, type ViewState } from './state';
import { formatDateTime, inputToWall, instantOf, wallOf, wallToInput, zoneLabel } from './tz';
import { DIMENSIONS, type DimensionName, type RangePreset } from './types';

export interface ControlsHost {
  readonly zone: string;
  readonly state: ViewState;
  readonly fixed: Record<string, string>;
  readonly live: Live;
  setRange(range: RangeChoice): void;
  setRefresh(seconds: number): void;
  removeFilter(dimension: DimensionName): void;
}

const PRESET_LABELS: Record<RangePreset, string> = {
  '1h': 'Last hour',
  '24h': 'Last 24 hours',
  '7d': 'Last 7 days',
  '30d': 'Last 30 days',
};
const PRESET_MS: Record<RangePreset, number> = { '1h': 3.6e6, '24h': 8.64e7, '7d': 6.048e8, '30d': 2.592e9 };
const REFRESH_CHOICES = [2, 5, 10, 30, 60, 300, 900];

export class Controls {
  readonly toolbar: HTMLElement;
  readonly chips: HTMLElement;
  /** Polite announcements for screen readers. */
  readonly announcer: HTMLElement;
  private readonly rangeSelect: HTMLSelectElement;
  private readonly customForm: HTMLFormElement;
  private readonly fromInput: HTMLInputElement;
  private readonly toInput: HTMLInputElement;
  private readonly customError: HTMLElement;
  private readonly zoneNote: HTMLElement;
  private readonly refreshSelect: HTMLSelectElement;
  private readonly pauseButton: HTMLButtonElement;
  private readonly updated: HTMLElement;
  private customOpen = false;
  private chipsShown = '';

  constructor(private readonly host: ControlsHost) {
    const rangeId = uid('range');
    this.rangeSelect = select(
      { id: rangeId, 'data-testid': 'range-select', onchange: () => this.onRangeSelect() },
      [
        ...(Object.keys(PRESET_LABELS) as RangePreset[]).map((p) => ({ value: p, label: PRESET_LABELS[p] })),
        { value: 'custom', label: 'Custom…' },
      ],
      '24h',
    );
    const fromId = uid('from');
    const toId = uid('to');
    this.fromInput = h('input', { id: fromId, type: 'datetime-local', required: true, 'data-testid': 'range-from' });
    this.toInput = h('input', { id: toId, type: 'datetime-local', required: true, 'data-testid': 'range-to' });
    this.zoneNote = h('span', { class: 'zone-note', 'data-testid': 'range-zone' });
    this.customError = h('span', { class: 'error', role: 'alert' });
    this.customForm = h(
      'form',
      { class: 'custom-range', hidden: true, 'data-testid': 'custom-range', 'aria-label': 'Custom time range' },
      h('label', { for: fromId }, 'From'),
      this.fromInput,
      h('label', { for: toId }, 'to'),
      this.toInput,
      this.zoneNote,
      h('button', { type: 'submit', class: 'primary', 'data-testid': 'range-apply' }, 'Apply'),
      this.customError,
    );
    this.customForm.addEventListener('submit', (e) => {
      e.preventDefault();
      this.applyCustom();
    });

    const refreshId = uid('refresh');
    this.refreshSelect = h('select', {
      id: refreshId,
      'data-testid': 'refresh-select',
      onchange: () => host.setRefresh(Number(this.refreshSelect.value)),
    });
    this.pauseButton = h(
      'button',
      {
        type: 'button',
        'aria-pressed': 'false',
        'data-testid': 'pause',
        onclick: () => host.live.setPaused(!host.live.paused),
      },
      'Pause',
    );
    this.updated = h('span', { class: 'updated', 'data-testid': 'updated-ago', 'aria-live': 'off' });
    this.announcer = h('div', { class: 'sr-only', role: 'status', 'aria-live': 'polite', 'data-testid': 'live-status' });

    this.toolbar = h(
      'div',
      { class: 'toolbar', role: 'group', 'aria-label': 'View' },
      h('div', { class: 'field' }, h('label', { for: rangeId }, 'Time range'), this.rangeSelect),
      this.customForm,
      h(
        'div',
        { class: 'field live' },
        h('label', { for: refreshId }, 'Refresh every'),
        this.refreshSelect,
        this.pauseButton,
        h(
          'button',
          { type: 'button', 'aria-label': 'Refresh now', title: 'Refresh now', 'data-testid': 'refresh-now', onclick: () => host.live.refreshNow('user') },
          '↻',
        ),
        this.updated,
      ),
      this.announcer,
    );
    this.chips = h('ul', { class: 'chips', 'aria-label': 'Active filters', 'data-testid': 'filter-chips' });
    this.update();
  }

  /** Brings every control in line with the host's state. */
  update(): void {
    const { state, live } = this.host;
    if (state.range.kind === 'preset') {
      // While a custom range is being typed, the form stays open.
      this.rangeSelect.value = this.customOpen ? 'custom' : state.range.preset;
      this.customForm.hidden = !this.customOpen;
    } else {
      this.rangeSelect.value = 'custom';
      this.customForm.hidden = false;
      this.fillCustom(Date.parse(state.range.from), Date.parse(state.range.to));
    }
    this.zoneNote.textContent = `time zone ${zoneLabel(this.host.zone)}`;

    const choices = REFRESH_CHOICES.includes(live.intervalSeconds)
      ? REFRESH_CHOICES
      : [...REFRESH_CHOICES, live.intervalSeconds].sort((a, b) => a - b);
    // Rebuilt only when it changes: an open drop-down must not close on every refresh.
    if (this.refreshSelect.options.length !== choices.length || this.refreshSelect.value !== String(live.intervalSeconds)) {
      clear(this.refreshSelect);
      for (const s of choices) {
        const option = h('option', { value: String(s) }, formatDuration(s));
        option.selected = s === live.intervalSeconds;
        this.refreshSelect.append(option);
      }
    }
    this.pauseButton.textContent = live.paused ? 'Resume' : 'Pause';
    this.pauseButton.setAttribute('aria-pressed', String(live.paused));
    this.pauseButton.setAttribute('aria-label', live.paused ? 'Resume live updates' : 'Pause live updates');
    this.renderChips();
    this.tick();
  }

  /** Called every second: "updated N s ago". */
  tick(): void {
    const { live } = this.host;
    const parts: string[] = [];
    if (live.lastUpdated === null) parts.push(live.running ? 'Loading…' : 'Not updated yet');
    else parts.push(`Updated ${formatAgo((Date.now() - live.lastUpdated) / 1000)}`);
    if (live.paused) parts.push('paused');
    else if (live.running && live.lastUpdated !== null) parts.push('updating…');
    this.updated.textContent = parts.join(' · ');
    this.updated.dataset.seconds =
      live.lastUpdated === null ? '' : String(Math.floor((Date.now() - live.lastUpdated) / 1000));
  }

  announce(text: string): void {
    this.announcer.textContent = text;
  }

  private renderChips(): void {
    const { state, fixed } = this.host;
    // Redrawn only when the filters change, so a focused chip keeps its focus.
    const signature = JSON.stringify([state.filters, fixed]);
    if (signature === this.chipsShown) return;
    this.chipsShown = signature;
    clear(this.chips);
    for (const d of DIMENSIONS) {
      const value = fixed[d];
      if (value === undefined) continue;
      this.chips.append(
        h(
          'li',
          { class: 'chip fixed', 'data-testid': 'filter-chip', 'data-dimension': d, 'data-value': value, 'data-fixed': 'true', title: 'Fixed by the share link' },
          lockIcon(),
          `${DIMENSION_LABELS[d]}: ${dimensionValueLabel(value)}`,
          srOnly(' (fixed by the share link)'),
        ),
      );
    }
    for (const d of DIMENSIONS) {
      const value = state.filters[d];
      if (value === undefined || fixed[d] !== undefined) continue;
      const text = `${DIMENSION_LABELS[d]}: ${dimensionValueLabel(value)}`;
      this.chips.append(
        h(
          'li',
          { class: 'chip', 'data-testid': 'filter-chip', 'data-dimension': d, 'data-value': value },
          text,
          h(
            'button',
            {
              type: 'button',
              class: 'chip-remove',
              'aria-label': `Remove filter ${text}`,
              'data-testid': 'filter-chip-remove',
              onclick: () => this.host.removeFilter(d),
            },
            '×',
          ),
        ),
      );
    }
    if (!this.chips.firstChild) {
      this.chips.append(h('li', { class: 'muted chips-empty' }, 'No filters. Choose a value in a breakdown to filter every widget.'));
    }
  }

  private onRangeSelect(): void {
    const value = this.rangeSelect.value;
    if (value === 'custom') {
      const { range } = this.host.state;
      const to = range.kind === 'custom' ? Date.parse(range.to) : Date.now();
      const from = range.kind === 'custom' ? Date.parse(range.from) : to - PRESET_MS[range.preset];
      this.fillCustom(from, to);
      this.customOpen = true;
      this.customForm.hidden = false;
      this.customError.textContent = '';
      this.fromInput.focus();
      return;
    }
    this.customOpen = false;
    this.customForm.hidden = true;
    this.host.setRange({ kind: 'preset', preset: value as RangePreset });
  }

  private fillCustom(from: number, to: number): void {
    const zone = this.host.zone;
    this.fromInput.value = wallToInput(wallOf(from, zone));
    this.toInput.value = wallToInput(wallOf(to, zone));
    this.customForm.title = `${formatDateTime(from, zone)} – ${formatDateTime(to, zone)}`;
  }

  private applyCustom(): void {
    const zone = this.host.zone;
    const from = inputToWall(this.fromInput.value);
    const to = inputToWall(this.toInput.value);
    if (!from || !to) {
      this.customError.textContent = 'Enter both dates and times.';
      return;
    }
    const fromMs = instantOf(from, zone);
    const toMs = instantOf(to, zone);
    if (!(fromMs < toMs)) {
      this.customError.textContent = 'The range must end after it starts.';
      return;
    }
    if (toMs - fromMs > 400 * 86_400_000) {
      this.customError.textContent = 'A range spans at most 400 days.';
      return;
    }
    this.customError.textContent = '';
    this.customOpen = false;
    this.host.setRange({ kind: 'custom', from: isoInstant(fromMs), to: isoInstant(toMs) });
  }
}

/** A small padlock, drawn (no icon font or emoji font is assumed). */
function lockIcon(): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('width', '12');
  svg.setAttribute('height', '12');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'lock');
  const body = document.createElementNS(ns, 'rect');
  for (const [k, v] of Object.entries({ x: '3', y: '7', width: '10', height: '8', rx: '1.5', fill: 'currentColor' })) body.setAttribute(k, v);
  const shackle = document.createElementNS(ns, 'path');
  shackle.setAttribute('d', 'M5 7V5a3 3 0 0 1 6 0v2');
  shackle.setAttribute('fill', 'none');
  shackle.setAttribute('stroke', 'currentColor');
  shackle.setAttribute('stroke-width', '1.8');
  svg.append(body, shackle);
  return svg;
}
