// ECharts, tree-shaken to what the dashboard draws: lines and bars on a grid, with tooltips,
// legends and datasets, on a canvas.

import * as echarts from 'echarts/core';
import { BarChart, LineChart, type BarSeriesOption, type LineSeriesOption } from 'echarts/charts';
import {
  DatasetComponent,
  GridComponent,
  LegendComponent,
  TooltipComponent,
  type DatasetComponentOption,
  type GridComponentOption,
  type LegendComponentOption,
  type TooltipComponentOption,
} from 'echarts/components';
import { CanvasRenderer } from 'echarts/renderers';

echarts.use([LineChart, BarChart, GridComponent, TooltipComponent, LegendComponent, DatasetComponent, CanvasRenderer]);

export type ChartOption = echarts.ComposeOption<
  | LineSeriesOption
  | BarSeriesOption
  | GridComponentOption
  | TooltipComponentOption
  | LegendComponentOption
  | DatasetComponentOption
>;

export const COLORS = ['#2563eb', '#f97316', '#16a34a', '#dc2626', '#7c3aed', '#0891b2'];

export const AXIS_TEXT = '#5b6472';
export const GRID_LINE = '#e5e8ee';

/** One chart in one element, resized with it and disposed with its widget. */
export class Chart {
  private readonly chart: echarts.ECharts;
  private readonly observer: ResizeObserver;

  constructor(readonly el: HTMLElement) {
    this.chart = echarts.init(el, undefined, { renderer: 'canvas' });
    this.observer = new ResizeObserver(() => this.chart.resize());
    this.observer.observe(el);
  }

  set(option: ChartOption): void {
    this.chart.setOption({ animation: false, color: COLORS, ...option }, { notMerge: true });
  }

  dispose(): void {
    this.observer.disconnect();
    this.chart.dispose();
  }
}
