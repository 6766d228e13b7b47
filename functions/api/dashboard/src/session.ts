// Where the credential lives: in this tab's sessionStorage only. A share token arrives in the
// URL fragment (#share=…), which browsers never send to the server.

import type { Credential } from './api';

const STORAGE_KEY = 'rmk.credential';

export function shareTokenFromHash(hash = window.location.hash): string | null {
  const token = new URLSearchParams(hash.replace(/^#/, '')).get('share');
  return token && token.trim() ? token.trim() : null;
}

export function storedCredential(): Credential | null {
  try {
    const raw = window.sessionStorage.getItem(STORAGE_KEY);
    if (!raw) return null;
    const c = JSON.parse(raw) as Partial<Credential>;
    if ((c.kind === 'key' || c.kind === 'share') && typeof c.secret === 'string' && c.secret) {
      return { kind: c.kind, secret: c.secret };
    }
  } catch {
    // Storage unavailable (blocked, or a sandboxed frame): the credential lives in memory only.
  }
  return null;
}

export function storeCredential(c: Credential): void {
  try {
    window.sessionStorage.setItem(STORAGE_KEY, JSON.stringify(c));
  } catch {
    // See storedCredential.
  }
}

export function forgetCredential(): void {
  try {
    window.sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // See storedCredential.
  }
}

/** A pasted secret: share tokens start with rms_, everything else is taken as a key. */
export function credentialOf(secret: string): Credential {
  const s = secret.trim();
  return { kind: s.startsWith('rms_') ? 'share' : 'key', secret: s };
}
