/**
 * The CLI's side of the control API: reads the token the daemon wrote under dataDir and makes
 * one authenticated request. A daemon that is not running is a typed error, not a stack trace.
 */
import { readFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import type { Config } from '../../config/load.ts'
import { ApiRequestError, ApiUnauthorizedError, DaemonNotRunningError } from './errors.ts'

export function tokenPathFor (config: Config): string { return join(config.node.dataDir, 'api.token') }

export class ApiClient {
  constructor (private readonly host: string, private readonly port: number, private readonly tokenPath: string) {}

  static forConfig (config: Config): ApiClient {
    return new ApiClient(config.node.api.host === '0.0.0.0' ? '127.0.0.1' : config.node.api.host, config.node.api.port, tokenPathFor(config))
  }

  get address (): string { return `${this.host}:${this.port}` }

  async call<T = unknown> (method: 'GET' | 'POST', path: string, body?: unknown, opts: { timeoutMs?: number } = {}): Promise<T> {
    let token: string
    try { token = (await readFile(this.tokenPath, 'utf8')).trim() } catch (err) { throw new DaemonNotRunningError(this.address, { cause: err }) }
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const { status, text } = await new Promise<{ status: number, text: string }>((resolve, reject) => {
      const req = request({ host: this.host, port: this.port, path, method, headers: { authorization: `Bearer ${token}`, ...(payload !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}) }, timeout: opts.timeoutMs ?? 30_000 }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }))
        res.on('error', reject)
      })
      req.on('timeout', () => req.destroy(new Error('request timed out')))
      req.on('error', (err) => reject(new DaemonNotRunningError(this.address, { cause: err })))
      if (payload !== undefined) req.write(payload)
      req.end()
    })
    if (status === 401) throw new ApiUnauthorizedError()
    let json: unknown
    try { json = text === '' ? {} : JSON.parse(text) } catch { json = { raw: text } }
    if (status >= 400) throw new ApiRequestError(status, (json as { error?: Record<string, string> }).error ?? {})
    return json as T
  }

  async text (path: string): Promise<string> {
    const token = (await readFile(this.tokenPath, 'utf8').catch((err) => { throw new DaemonNotRunningError(this.address, { cause: err }) })).trim()
    return await new Promise((resolve, reject) => {
      const req = request({ host: this.host, port: this.port, path, headers: { authorization: `Bearer ${token}` } }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => { if ((res.statusCode ?? 0) === 401) reject(new ApiUnauthorizedError()); else resolve(Buffer.concat(chunks).toString('utf8')) })
      })
      req.on('error', (err) => reject(new DaemonNotRunningError(this.address, { cause: err })))
      req.end()
    })
  }
}
