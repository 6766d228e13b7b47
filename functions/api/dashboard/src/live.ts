// Live refresh: one cycle at a time, the next one scheduled when the last one ends; a new
// view (filters, range, layout) aborts the running cycle and starts at once.

import { isAbort } from './api';

export type Trigger = 'timer' | 'user';

export class Live {
  intervalSeconds: number;
  paused = false;
  lastUpdated: number | null = null;
  private timer: number | undefined;
  private controller: AbortController | null = null;
  private waitingForVisible = false;
  private lastEnded = 0;
  private stopped = false;

  constructor(
    intervalSeconds: number,
    /** Fetches and renders; true when every request succeeded. */
    private readonly cycle: (signal: AbortSignal, trigger: Trigger) => Promise<boolean>,
    private readonly onChange: () => void,
  ) {
    this.intervalSeconds = intervalSeconds;
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  get running(): boolean {
    return this.controller !== null;
  }

  /** Runs a cycle now, abandoning a running one (its answers are for an older view). */
  refreshNow(trigger: Trigger = 'user'): void {
    if (this.stopped) return;
    this.controller?.abort();
    window.clearTimeout(this.timer);
    void this.run(trigger);
  }

  setInterval(seconds: number): void {
    this.intervalSeconds = seconds;
    if (!this.running) this.schedule();
    this.onChange();
  }

  setPaused(paused: boolean): void {
    this.paused = paused;
    if (paused) window.clearTimeout(this.timer);
    else if (!this.running) {
      const age = this.lastUpdated === null ? Infinity : (Date.now() - this.lastUpdated) / 1000;
      if (age >= this.intervalSeconds) this.refreshNow('timer');
      else this.schedule();
    }
    this.onChange();
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
    window.clearTimeout(this.timer);
    document.removeEventListener('visibilitychange', this.onVisibility);
  }

  private async run(trigger: Trigger): Promise<void> {
    const controller = new AbortController();
    this.controller = controller;
    this.onChange();
    try {
      const ok = await this.cycle(controller.signal, trigger);
      if (ok && !controller.signal.aborted) this.lastUpdated = Date.now();
    } catch (e) {
      if (!isAbort(e)) console.error('refresh failed', e);
    } finally {
      if (this.controller === controller) {
        this.controller = null;
        this.lastEnded = Date.now();
        this.schedule();
        this.onChange();
      }
    }
  }

  private schedule(): void {
    window.clearTimeout(this.timer);
    if (this.paused || this.stopped) return;
    // Counted from the end of the last cycle, so a failing server is not asked more often.
    const wait = Math.max(250, this.intervalSeconds * 1000 - (Date.now() - this.lastEnded));
    this.timer = window.setTimeout(() => this.tick(), wait);
  }

  private tick(): void {
    if (this.running || this.paused || this.stopped) return;
    // A hidden tab waits; it catches up as soon as it is shown again.
    if (document.hidden) {
      this.waitingForVisible = true;
      return;
    }
    void this.run('timer');
  }

  private readonly onVisibility = (): void => {
    if (!document.hidden && this.waitingForVisible) {
      this.waitingForVisible = false;
      this.tick();
    }
  };
}
