// Start-up: find the credential (a share token in the fragment, or the key of this tab), learn
// who it belongs to, and show the dashboard, the sign-in page or why neither can be shown.

import './style.css';
import { Api, ApiError, type Credential } from './api';
import { App, type Mode } from './app';
import { showFatal, showSignIn } from './signin';
import { forgetCredential, shareTokenFromHash, storeCredential, storedCredential } from './session';
import { isValidZone } from './tz';
import type { Dashboard, Identity } from './types';

const root = document.getElementById('app') as HTMLElement;
const embed = /\/embed\/?$/.test(window.location.pathname);
let app: App | null = null;

function signIn(message = ''): void {
  app?.destroy();
  app = null;
  forgetCredential();
  showSignIn(root, message, (credential, identity) => {
    storeCredential(credential);
    void open(credential, identity);
  });
}

function refused(credential: Credential, error: ApiError): void {
  app?.destroy();
  app = null;
  if (credential.kind === 'key' && !embed) {
    signIn(error.message);
    return;
  }
  const actions = embed ? [] : [{ label: 'Sign in with a key instead', run: () => signIn() }];
  showFatal(root, 'This shared dashboard cannot be shown', error.message, actions);
}

async function open(credential: Credential, known?: Identity): Promise<void> {
  const api = new Api(credential);
  let identity: Identity;
  let dashboards: Dashboard[] = [];
  try {
    identity = known ?? (await api.whoami());
    dashboards = await api.dashboards(identity.tenant_id);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return refused(credential, e);
    const message = e instanceof ApiError ? e.message : String(e);
    showFatal(root, 'The dashboard could not be loaded', message, [
      { label: 'Try again', run: () => void open(credential) },
      ...(embed ? [] : [{ label: 'Sign in again', run: () => signIn() }]),
    ]);
    return;
  }
  const zone = identity.time_zone && isValidZone(identity.time_zone) ? identity.time_zone : 'UTC';
  const mode: Mode = embed ? 'embed' : credential.kind === 'share' || identity.read_only ? 'share' : 'full';
  app?.destroy();
  app = new App(root, api, identity, dashboards, mode, zone, (e) => refused(credential, e), () => signIn());
}

function start(): void {
  const shared = shareTokenFromHash();
  if (shared) {
    const credential: Credential = { kind: 'share', secret: shared };
    storeCredential(credential);
    void open(credential);
    return;
  }
  const stored = storedCredential();
  if (embed) {
    if (stored?.kind === 'share') void open(stored);
    else showFatal(root, 'Nothing to show', 'This embedded dashboard needs a share link (…/embed#share=…).');
    return;
  }
  if (stored) void open(stored);
  else signIn();
}

start();
