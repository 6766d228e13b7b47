// Re-rendering on every refresh must not steal keyboard focus: the focused control is found
// again by its data-focus-key after the body is rebuilt.

export function keepFocus(container: HTMLElement, rebuild: () => void): void {
  const active = document.activeElement;
  const key = active instanceof HTMLElement && container.contains(active) ? active.dataset.focusKey : undefined;
  rebuild();
  if (key === undefined) return;
  for (const el of container.querySelectorAll<HTMLElement>('[data-focus-key]')) {
    if (el.dataset.focusKey === key) {
      el.focus({ preventScroll: true });
      return;
    }
  }
}
