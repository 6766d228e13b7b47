// The reports API client: one credential, JSON in and out, errors as ApiError.

import type {
  Breakdown,
  Dashboard,
  Identity,
  IngestReport,
  Layout,
  NewShareToken,
  ShareToken,
  Summary,
  TimeSeries,
  Top,
} from './types';

export type Credential = { kind: 'key' | 'share'; secret: string };

/** An answer of the API other than 2xx, or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export function isAbort(e: unknown): boolean {
  return e instanceof DOMException && e.name === 'AbortError';
}

export type Query = Record<string, string | number | undefined>;

export class Api {
  readonly base: URL;

  constructor(
    readonly credential: Credential,
    base?: URL,
  ) {
    // The page lives at /api/dashboard/ (or /api/dashboard/embed); the API at /api/v1/.
    this.base = base ?? new URL('../v1/', window.location.href);
  }

  url(path: string, query: Query = {}): URL {
    const url = new URL(path, this.base);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url;
  }

  async request<T>(
    method: string,
    path: string,
    options: { query?: Query; body?: unknown; signal?: AbortSignal } = {},
  ): Promise<T> {
    const scheme = this.credential.kind === 'key' ? 'Bearer' : 'Share';
    const headers: Record<string, string> = {
      Authorization: `${scheme} ${this.credential.secret}`,
      Accept: 'application/json',
    };
    const init: RequestInit = {
      method,
      headers,
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    };
    if (options.signal) init.signal = options.signal;
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(options.body);
    }
    let response: Response;
    // A 429 (this credential has its most reports running) is retried after the server's
    // Retry-After, a few times: a dashboard of many widgets asks for them all at once.
    for (let attempt = 0; ; attempt++) {
      try {
        response = await fetch(this.url(path, options.query), init);
      } catch (e) {
        if (isAbort(e)) throw e;
        throw new ApiError(0, 'network', 'the server could not be reached');
      }
      if (response.status !== 429 || attempt >= 4) break;
      const seconds = Math.min(Math.max(Number(response.headers.get('Retry-After')) || 1, 1), 5);
      await pause(seconds * 1000 * (0.5 + Math.random()), options.signal);
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let body: unknown = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      // Not JSON: reported below when the status is an error.
    }
    if (!response.ok) {
      const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
      throw new ApiError(
        response.status,
        error?.code ?? `http_${response.status}`,
        error?.message ?? `the server answered ${response.status} ${response.statusText}`.trim(),
      );
    }
    if (body === undefined) {
      throw new ApiError(response.status, 'bad_response', 'the server answered without JSON');
    }
    return body as T;
  }

  whoami(signal?: AbortSignal): Promise<Identity> {
    return this.request('GET', 'whoami', signal ? { signal } : {});
  }

  private tenantPath(tenant: number, rest: string): string {
    return `tenants/${tenant}/${rest}`;
  }

  report<T>(tenant: number, name: string, query: Query, signal?: AbortSignal): Promise<T> {
    return this.request<T>('GET', this.tenantPath(tenant, name), signal ? { query, signal } : { query });
  }

  summary(tenant: number, query: Query, signal?: AbortSignal): Promise<Summary> {
    return this.report(tenant, 'summary', query, signal);
  }

  timeseries(tenant: number, query: Query, signal?: AbortSignal): Promise<TimeSeries> {
    return this.report(tenant, 'timeseries', query, signal);
  }

  breakdown(tenant: number, query: Query, signal?: AbortSignal): Promise<Breakdown> {
    return this.report(tenant, 'breakdown', query, signal);
  }

  top(tenant: number, query: Query, signal?: AbortSignal): Promise<Top> {
    return this.report(tenant, 'top', query, signal);
  }

  ingest(tenant: number, query: Query, signal?: AbortSignal): Promise<IngestReport> {
    return this.report(tenant, 'ingest', query, signal);
  }

  async dashboards(tenant: number): Promise<Dashboard[]> {
    const answer = await this.request<{ dashboards: Dashboard[] }>(
      'GET',
      this.tenantPath(tenant, 'dashboards'),
    );
    return answer.dashboards;
  }

  saveDashboard(
    tenant: number,
    name: string,
    body: { title: string; layout: Layout; expected_version?: number },
  ): Promise<Dashboard> {
    return this.request('PUT', this.tenantPath(tenant, `dashboards/${encodeURIComponent(name)}`), {
      body,
    });
  }

  deleteDashboard(tenant: number, name: string): Promise<void> {
    return this.request('DELETE', this.tenantPath(tenant, `dashboards/${encodeURIComponent(name)}`));
  }

  async shareTokens(tenant: number): Promise<ShareToken[]> {
    const answer = await this.request<{ share_tokens: ShareToken[] }>(
      'GET',
      this.tenantPath(tenant, 'share-tokens'),
    );
    return answer.share_tokens;
  }

  createShareToken(
    tenant: number,
    body: { expires_in_seconds: number; filters: Record<string, string>; label: string },
  ): Promise<NewShareToken> {
    return this.request('POST', this.tenantPath(tenant, 'share-tokens'), { body });
  }

  revokeShareToken(tenant: number, tokenId: string): Promise<void> {
    return this.request(
      'DELETE',
      this.tenantPath(tenant, `share-tokens/${encodeURIComponent(tokenId)}`),
    );
  }
}

/** Waits `ms`, or rejects as an abort when `signal` fires first. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new DOMException('aborted', 'AbortError'));
      return;
    }
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(new DOMException('aborted', 'AbortError'));
      },
      { once: true },
    );
  });
}
