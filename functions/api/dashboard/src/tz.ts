// Time zone helpers over Intl: the tenant's wall clock <-> instants, and labels.

export interface Wall {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const partFormatters = new Map<string, Intl.DateTimeFormat>();

function partFormatter(zone: string): Intl.DateTimeFormat {
  let f = partFormatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    partFormatters.set(zone, f);
  }
  return f;
}

export function isValidZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** The wall clock of `zone` at instant `ms`. */
export function wallOf(ms: number, zone: string): Wall {
  const wall: Wall = { year: 0, month: 0, day: 0, hour: 0, minute: 0, second: 0 };
  for (const part of partFormatter(zone).formatToParts(new Date(ms))) {
    if (part.type in wall) wall[part.type as keyof Wall] = Number(part.value);
  }
  // Some engines write midnight as 24 even with h23.
  if (wall.hour === 24) wall.hour = 0;
  return wall;
}

function wallAsUtc(w: Wall): number {
  return Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second);
}

/** How far `zone`'s wall clock is ahead of UTC at instant `ms`. */
export function offsetMs(ms: number, zone: string): number {
  const whole = Math.floor(ms / 1000) * 1000;
  return wallAsUtc(wallOf(whole, zone)) - whole;
}

/** The instant at which `zone`'s wall clock shows `w` (the later one in a gap). */
export function instantOf(w: Wall, zone: string): number {
  const guess = wallAsUtc(w);
  const first = guess - offsetMs(guess, zone);
  return guess - offsetMs(first, zone);
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** `YYYY-MM-DDTHH:MM`, the value of an `<input type="datetime-local">`. */
export function wallToInput(w: Wall): string {
  return `${pad(w.year, 4)}-${pad(w.month)}-${pad(w.day)}T${pad(w.hour)}:${pad(w.minute)}`;
}

export function inputToWall(value: string): Wall | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(value.trim());
  if (!m) return null;
  const [year, month, day, hour, minute, second] = m.slice(1).map((s) => Number(s ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59) return null;
  return { year, month, day, hour, minute, second };
}

export function offsetLabel(ms: number, zone: string): string {
  const minutes = Math.round(offsetMs(ms, zone) / 60000);
  const sign = minutes < 0 ? '−' : '+';
  const abs = Math.abs(minutes);
  return `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

export function zoneLabel(zone: string, ms = Date.now()): string {
  return `${zone} (${offsetLabel(ms, zone)})`;
}

const displayFormatters = new Map<string, Intl.DateTimeFormat>();

function display(zone: string, key: string, options: Intl.DateTimeFormatOptions): Intl.DateTimeFormat {
  const id = `${zone}|${key}`;
  let f = displayFormatters.get(id);
  if (!f) {
    f = new Intl.DateTimeFormat(undefined, { ...options, timeZone: zone });
    displayFormatters.set(id, f);
  }
  return f;
}

export function formatDateTime(ms: number, zone: string): string {
  return display(zone, 'dt', { dateStyle: 'medium', timeStyle: 'short' }).format(ms);
}

export function formatDate(ms: number, zone: string): string {
  return display(zone, 'd', { dateStyle: 'medium' }).format(ms);
}

export function formatTime(ms: number, zone: string): string {
  return display(zone, 't', { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms);
}

export function formatDayTime(ms: number, zone: string): string {
  return display(zone, 'dayt', {
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    hourCycle: 'h23',
  }).format(ms);
}

export type Granularity = '5m' | '1h' | '1d';

/** The start of the bucket after the one starting at `ms` (local days for `1d`). */
export function nextBucket(ms: number, granularity: Granularity, zone: string): number {
  if (granularity === '5m') return ms + 5 * 60_000;
  if (granularity === '1h') return ms + 3_600_000;
  const w = wallOf(ms, zone);
  // Date.UTC normalizes day overflow (31 + 1 → the 1st of the next month).
  const next = new Date(Date.UTC(w.year, w.month - 1, w.day + 1));
  return instantOf(
    {
      year: next.getUTCFullYear(),
      month: next.getUTCMonth() + 1,
      day: next.getUTCDate(),
      hour: 0,
      minute: 0,
      second: 0,
    },
    zone,
  );
}
