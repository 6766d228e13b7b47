// The campaigns widget: the campaign report as a table under the chosen attribution model,
// sorted by any column, with ad spend's cost, CPC, CPA and ROAS when the tenant has spend in
// the range. A campaign's name filters the dashboard by it.

import { clear, h, select } from './dom';
import { keepFocus } from './focus';
import { MODEL_LABELS, formatErrorBound, formatInteger, formatMoney, formatMultiple, formatPercent } from './format';
import { MODELS, type CampaignRow, type Campaigns, type ModelName } from './types';
import type { RenderContext, Unavailable, WidgetView } from './widgets';

type Kind = 'count' | 'ratio' | 'money' | 'times';

interface Column {
  name: keyof CampaignRow;
  label: string;
  kind: Kind;
  /** Shown only when the range has ad spend. */
  spend?: boolean;
  title: string;
}

const COLUMNS: Column[] = [
  { name: 'impressions', label: 'Impr.', kind: 'count', title: 'Ad impressions' },
  { name: 'clicks', label: 'Clicks', kind: 'count', title: 'Ad and email clicks and tagged page views' },
  { name: 'ctr', label: 'CTR', kind: 'ratio', title: 'Clicks per impression' },
  { name: 'reach', label: 'Reach', kind: 'count', title: 'Devices touched (estimate)' },
  { name: 'frequency', label: 'Freq.', kind: 'times', title: 'Impressions per device reached' },
  { name: 'sessions', label: 'Sessions', kind: 'count', title: 'Sessions the campaign started' },
  { name: 'conversions', label: 'Conv.', kind: 'count', title: 'Conversions attributed under the model' },
  { name: 'revenue', label: 'Revenue', kind: 'money', title: 'Revenue attributed under the model' },
  { name: 'conversion_rate', label: 'Conv. rate', kind: 'ratio', title: 'Conversions per session' },
  { name: 'cost', label: 'Cost', kind: 'money', spend: true, title: 'Ad spend' },
  { name: 'cpc', label: 'CPC', kind: 'money', spend: true, title: 'Cost per click' },
  { name: 'cpa', label: 'CPA', kind: 'money', spend: true, title: 'Cost per attributed conversion' },
  { name: 'roas', label: 'ROAS', kind: 'times', spend: true, title: 'Revenue per cost' },
];


function numeric(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  const n = typeof v === 'number' ? v : Number(v);
  return Number.isFinite(n) ? n : null;
}

function shown(kind: Kind, v: unknown): string {
  const n = numeric(v);
  if (n === null) return '–';
  switch (kind) {
    case 'count':
      return formatInteger(n);
    case 'ratio':
      return formatPercent(n);
    case 'money':
      return formatMoney(n);
    case 'times':
      return formatMultiple(n);
  }
}

function label(row: CampaignRow): string {
  return row.campaign === '' ? '(direct)' : row.campaign;
}

/** Rows in the chosen order: by a column (missing figures last), else the report's. */
function sorted(rows: CampaignRow[], sort: WidgetView['sort']): CampaignRow[] {
  if (sort === null) return rows;
  const out = [...rows];
  const sign = sort.descending ? -1 : 1;
  out.sort((a, b) => {
    if (sort.column === 'campaign') return sign * label(a).localeCompare(label(b));
    const x = numeric(a[sort.column as keyof CampaignRow]);
    const y = numeric(b[sort.column as keyof CampaignRow]);
    if (x === null || y === null) return x === y ? 0 : x === null ? 1 : -1;
    return sign * (x - y);
  });
  return out;
}

export function renderCampaigns(view: WidgetView, data: Campaigns | Unavailable, ctx: RenderContext): void {
  const model: ModelName = view.modelChoice ?? view.widget.model ?? 'last_touch';
  const picker = select(
    { 'data-testid': 'campaigns-model', 'aria-label': 'Attribution model', 'data-focus-key': `model:${view.widget.id}` },
    MODELS.map((m) => ({ value: m, label: MODEL_LABELS[m] })),
    model,
  );
  picker.addEventListener('change', () => {
    view.modelChoice = picker.value as ModelName;
    view.body.setAttribute('aria-busy', 'true');
    ctx.refresh();
  });

  keepFocus(view.body, () => {
    clear(view.body);
    view.body.append(h('div', { class: 'campaigns-tools' }, h('label', {}, 'Attribution ', picker)));
    if ('unavailable' in data) {
      view.note.textContent = '';
      view.body.append(h('p', { class: 'muted', 'data-testid': 'campaigns-unavailable' }, data.unavailable));
      return;
    }
    const bound = data.distinct_counts ? ` · reach ${formatErrorBound(data.distinct_counts.relative_error_95)}` : '';
    view.note.textContent = `${MODEL_LABELS[data.model].toLowerCase()}${bound}`;
    view.note.title = `${data.rows.length} of ${data.total_rows} campaign, source and medium rows`;
    if (data.rows.length === 0) {
      view.body.append(h('p', { class: 'muted' }, 'No campaign touches, sessions, conversions or spend in this range.'));
      return;
    }
    const withSpend = data.totals.cost !== null;
    const columns = COLUMNS.filter((c) => withSpend || !c.spend);
    const fixed = ctx.fixed.campaign !== undefined;
    const active = ctx.filters.campaign;

    const header = (name: string, text: string, title: string) => {
      const current = view.sort?.column === name ? view.sort : null;
      const sortState = current === null ? 'none' : current.descending ? 'descending' : 'ascending';
      return h(
        'th',
        { scope: 'col', 'aria-sort': sortState },
        h(
          'button',
          {
            type: 'button',
            class: 'sort',
            'data-testid': 'campaigns-sort',
            'data-column': name,
            'data-focus-key': `sort:${view.widget.id}:${name}`,
            title: `${title}; sort by it`,
            onclick: () => {
              // Figures sort largest first, names A to Z; a second click turns the order.
              const first = name !== 'campaign';
              view.sort = current === null ? { column: name, descending: first } : { column: name, descending: !current.descending };
              renderCampaigns(view, data, ctx);
            },
          },
          text,
          current === null ? '' : current.descending ? ' ↓' : ' ↑',
        ),
      );
    };
    const head = h('tr', {}, header('campaign', 'Campaign', 'Campaign, source / medium'), columns.map((c) => header(c.name, c.label, c.title)));
    const body = sorted(data.rows, view.sort).map((row) => {
      const pressed = active === row.campaign;
      const name = h(
        'button',
        {
          type: 'button',
          class: 'link',
          'data-testid': 'campaign-filter',
          'data-value': row.campaign,
          'data-focus-key': `campaign:${view.widget.id}:${row.campaign}|${row.source}|${row.medium}`,
          'aria-pressed': String(pressed),
          disabled: fixed,
          title: fixed ? 'The campaign is fixed by the share link' : pressed ? 'Remove the campaign filter' : `Filter the dashboard by campaign ${label(row)}`,
          onclick: () => ctx.toggleFilter('campaign', row.campaign),
        },
        label(row),
      );
      const via = row.source || row.medium ? h('span', { class: 'muted via' }, `${row.source || '–'} / ${row.medium || '–'}`) : null;
      return h(
        'tr',
        { 'data-testid': 'campaign-row', 'data-campaign': row.campaign, 'data-source': row.source, 'data-medium': row.medium },
        h('th', { scope: 'row' }, name, via),
        columns.map((c) => {
          const v = row[c.name];
          return h('td', { class: 'num', 'data-column': c.name, 'data-value': v === null ? '' : String(v) }, shown(c.kind, v));
        }),
      );
    });
    const t = data.totals;
    const totalCells: Partial<Record<keyof CampaignRow, unknown>> = {
      sessions: t.sessions,
      conversions: t.conversions,
      revenue: t.revenue,
      cost: t.cost,
      roas: t.roas,
    };
    const foot = h(
      'tr',
      { 'data-testid': 'campaigns-totals' },
      h('th', { scope: 'row' }, data.total_rows > data.rows.length ? `All ${data.total_rows} rows` : 'Total'),
      columns.map((c) => {
        const v = totalCells[c.name];
        return h('td', { class: 'num', 'data-column': c.name, 'data-value': v === undefined || v === null ? '' : String(v) }, v === undefined ? '' : shown(c.kind, v));
      }),
    );
    const mixed = t.spend_currencies.length > 1 ? h('p', { class: 'muted' }, `Costs are summed across ${t.spend_currencies.join(', ')}.`) : null;
    view.body.append(
      h(
        'div',
        { class: 'table-scroll' },
        h('table', { class: 'campaigns', 'data-testid': 'campaigns-table', 'aria-label': `Campaigns, ${MODEL_LABELS[data.model].toLowerCase()} attribution` }, h('thead', {}, head), h('tbody', {}, body), h('tfoot', {}, foot)),
      ),
    );
    if (mixed) view.body.append(mixed);
  });
}
