// A client of the ferryd API, for `ferry vm ...` (and tests). Errors from the daemon come back
// as FerryErrors carrying the daemon's code, so the CLI prints them like local ones.

import { FerryError } from '../errors.js';
import type { VmEvent } from '../vm/types.js';
import type { VmView } from './daemon.js';

export class ApiError extends FerryError {
  constructor(code: string, message: string, readonly status: number) { super(code, message); }
}

export interface SseMessage {
  readonly event: string;
  readonly data: string;
}

export class FerryClient {
  private readonly base: string;

  constructor(host: string, private readonly token: string) {
    this.base = host.replace(/\/+$/, '');
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.fetch(method, path, body);
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let json: unknown;
    try { json = text === '' ? undefined : JSON.parse(text); } catch { json = undefined; }
    if (!res.ok) {
      const err = (json as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
      const code = typeof err?.code === 'string' ? err.code : `HTTP_${res.status}`;
      const message = typeof err?.message === 'string' ? err.message : `${method} ${path}: HTTP ${res.status}`;
      throw new ApiError(code, message, res.status);
    }
    return json as T;
  }

  list(): Promise<{ vms: VmView[] }> { return this.request('GET', '/v1/vms'); }
  show(name: string): Promise<VmView> { return this.request('GET', `/v1/vms/${encodeURIComponent(name)}`); }

  /** Server-sent events from `path`, until `signal` aborts or the daemon ends the stream. */
  async *stream(path: string, signal: AbortSignal): AsyncGenerator<SseMessage> {
    const res = await this.fetch('GET', path, undefined, signal);
    if (!res.ok || !res.body) {
      await this.request('GET', path); // throws the daemon's error
      return;
    }
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = 'message';
          const data: string[] = [];
          for (const line of frame.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (data.length > 0) yield { event, data: data.join('\n') };
        }
      }
    } catch (err) {
      if (!signal.aborted) throw err;
    }
  }

  async *events(signal: AbortSignal, vm?: string): AsyncGenerator<VmEvent> {
    const query = vm !== undefined ? `?vm=${encodeURIComponent(vm)}` : '';
    for await (const m of this.stream(`/v1/events${query}`, signal)) yield JSON.parse(m.data) as VmEvent;
  }

  private async fetch(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    try {
      return await fetch(`${this.base}${path}`, {
        method, headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      const cause = (err as { cause?: { code?: string } }).cause;
      throw new FerryError('DAEMON_UNREACHABLE', `cannot reach ferryd at ${this.base}${cause?.code ? ` (${cause.code})` : ''}; is \`ferry daemon\` running?`, { cause: err });
    }
  }
}
