// The sign-in page (a tenant read key) and the page for a credential that cannot be used.

import { ApiError, Api, type Credential } from './api';
import { h } from './dom';
import { credentialOf } from './session';
import type { Identity } from './types';

export function showSignIn(
  root: HTMLElement,
  message: string,
  onSignedIn: (credential: Credential, identity: Identity) => void,
): void {
  const input = h('input', {
    id: 'signin-key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    placeholder: 'rmk_read_…',
    'data-testid': 'signin-key',
  });
  const error = h('p', { class: 'error', role: 'alert', 'data-testid': 'signin-error' }, message);
  const button = h('button', { type: 'submit', class: 'primary', 'data-testid': 'signin-submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'signin-form', 'aria-labelledby': 'signin-title' },
    h('label', { for: 'signin-key' }, 'Tenant read key'),
    input,
    button,
    error,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const credential = credentialOf(input.value);
    if (!credential.secret) return;
    button.disabled = true;
    error.textContent = '';
    try {
      const identity = await new Api(credential).whoami();
      onSignedIn(credential, identity);
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.message : String(err);
      button.disabled = false;
      input.focus();
    }
  });
  root.replaceChildren(
    h(
      'main',
      { class: 'signin', 'data-testid': 'signin' },
      h('h1', { id: 'signin-title' }, 'ReMarketable'),
      h('p', {}, 'Real-time marketing analytics. Sign in with your tenant’s read key.'),
      form,
      h('p', { class: 'muted' }, 'The key is kept in this browser tab only and sent to this server only.'),
    ),
  );
  document.title = 'Sign in · ReMarketable';
  input.focus();
}

export function showFatal(
  root: HTMLElement,
  title: string,
  message: string,
  actions: { label: string; run: () => void }[] = [],
): void {
  root.replaceChildren(
    h(
      'main',
      { class: 'signin fatal', 'data-testid': 'fatal' },
      h('h1', {}, title),
      h('p', { class: 'error', role: 'alert', 'data-testid': 'fatal-error' }, message),
      h(
        'div',
        { class: 'actions' },
        actions.map((a) => h('button', { type: 'button', onclick: a.run }, a.label)),
      ),
    ),
  );
  document.title = `${title} · ReMarketable`;
}
