// The view state carried by the URL query, so a view can be bookmarked and survives a reload:
// range (or from/to), filters, dashboard name and refresh interval. The fragment (a share
// token) is never touched.

import type { Query } from './api';
import { DIMENSIONS, RANGE_PRESETS, type Filters, type RangePreset } from './types';

export type RangeChoice =
  | { kind: 'preset'; preset: RangePreset }
  | { kind: 'custom'; from: string; to: string };

export interface ViewState {
  range: RangeChoice;
  filters: Filters;
  dashboard: string;
  /** Seconds between refreshes asked for in the URL; null: the dashboard's own. */
  refresh: number | null;
}

export const DEFAULT_DASHBOARD = 'main';
export const DEFAULT_REFRESH_SECONDS = 10;
export const MIN_REFRESH_SECONDS = 2;
export const MAX_REFRESH_SECONDS = 3600;
export const DASHBOARD_NAME = /^[a-z0-9][a-z0-9-]{0,39}$/;

export function clampRefresh(seconds: number): number {
  return Math.min(MAX_REFRESH_SECONDS, Math.max(MIN_REFRESH_SECONDS, Math.round(seconds)));
}

/** RFC 3339 in UTC, without milliseconds when there are none. */
export function isoInstant(ms: number): string {
  return new Date(ms).toISOString().replace('.000Z', 'Z');
}

function isPreset(value: string | null): value is RangePreset {
  return value !== null && (RANGE_PRESETS as readonly string[]).includes(value);
}

function validInstant(value: string | null): value is string {
  return value !== null && value !== '' && !Number.isNaN(Date.parse(value));
}

/** Reads the state from a query string; anything malformed falls back to its default. */
export function parseState(search: string): ViewState {
  const q = new URLSearchParams(search);
  const from = q.get('from');
  const to = q.get('to');
  let range: RangeChoice = { kind: 'preset', preset: '24h' };
  if (validInstant(from) && validInstant(to) && Date.parse(from) < Date.parse(to)) {
    range = {
      kind: 'custom',
      from: isoInstant(Date.parse(from)),
      to: isoInstant(Date.parse(to)),
    };
  } else {
    const preset = q.get('range');
    if (isPreset(preset)) range = { kind: 'preset', preset };
  }
  const filters: Filters = {};
  for (const d of DIMENSIONS) {
    const v = q.get(d);
    if (v !== null && v.length <= 256) filters[d] = v;
  }
  const name = q.get('dashboard');
  const refreshText = q.get('refresh');
  const refresh = refreshText !== null && /^\d+$/.test(refreshText) ? clampRefresh(Number(refreshText)) : null;
  return {
    range,
    filters,
    dashboard: name !== null && DASHBOARD_NAME.test(name) ? name : DEFAULT_DASHBOARD,
    refresh,
  };
}

export function stateToSearch(state: ViewState): string {
  const q = new URLSearchParams();
  if (state.dashboard !== DEFAULT_DASHBOARD) q.set('dashboard', state.dashboard);
  if (state.range.kind === 'preset') q.set('range', state.range.preset);
  else {
    q.set('from', state.range.from);
    q.set('to', state.range.to);
  }
  for (const d of DIMENSIONS) {
    const v = state.filters[d];
    if (v !== undefined) q.set(d, v);
  }
  if (state.refresh !== null) q.set('refresh', String(state.refresh));
  const text = q.toString();
  return text ? `?${text}` : '';
}

/** Puts the state in the address bar, keeping the path and the fragment. */
export function writeState(state: ViewState, how: 'push' | 'replace'): void {
  const url = `${window.location.pathname}${stateToSearch(state)}${window.location.hash}`;
  if (url === `${window.location.pathname}${window.location.search}${window.location.hash}`) return;
  if (how === 'push') window.history.pushState(null, '', url);
  else window.history.replaceState(null, '', url);
}

/** The range and filter parameters of every report request. */
export function reportQuery(state: ViewState, fixed: Record<string, string>): Query {
  const q: Query = {};
  if (state.range.kind === 'preset') q.range = state.range.preset;
  else {
    q.from = state.range.from;
    q.to = state.range.to;
  }
  for (const d of DIMENSIONS) {
    const v = state.filters[d];
    // A fixed filter applies on the server anyway; sending another value would be refused.
    if (v !== undefined && fixed[d] === undefined) q[d] = v;
  }
  return q;
}

export function sameState(a: ViewState, b: ViewState): boolean {
  return stateToSearch(a) === stateToSearch(b);
}
