/**
 * Server-sent events to the dashboard's pages: one stream per open page. `broadcast` writes one
 * event to every stream; a page that does not read (its socket's buffer over `maxBufferedBytes`)
 * is cut off instead of letting the daemon buffer for it. A comment line every `heartbeatMs`
 * keeps proxies and the browser from timing the stream out.
 */
import type { ServerResponse } from 'node:http'
import type { Clock, TimerHandle } from '../../common/clock.ts'

export interface SseHubInit {
  /** @default 15000 */
  heartbeatMs?: number
  /** @default 1 MiB */
  maxBufferedBytes?: number
  /** Most streams at once (the oldest is closed). @default 32 */
  maxClients?: number
}

export class SseHub {
  private readonly clients = new Set<ServerResponse>()
  private timer?: TimerHandle
  private nextId = 1

  constructor (private readonly components: { clock: Clock }, private readonly init: SseHubInit = {}) {}

  get size (): number { return this.clients.size }

  /** Takes over `res` as an event stream; `first` events are written before any broadcast. */
  open (res: ServerResponse, first: Array<{ event: string, data: unknown }>): void {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' })
    res.write('retry: 1000\n\n')
    for (const f of first) res.write(this.frame(f.event, f.data))
    this.clients.add(res)
    res.on('close', () => { this.clients.delete(res) })
    if (this.clients.size > (this.init.maxClients ?? 32)) { const oldest = this.clients.values().next().value; oldest?.end() }
    if (this.timer === undefined) this.arm()
  }

  broadcast (event: string, data: unknown): void {
    if (this.clients.size === 0) return
    const text = this.frame(event, data)
    const max = this.init.maxBufferedBytes ?? 1024 * 1024
    for (const res of this.clients) {
      if (res.writableLength > max) { this.clients.delete(res); res.destroy(); continue }
      res.write(text)
    }
  }

  closeAll (): void {
    for (const res of this.clients) res.end()
    this.clients.clear()
    this.components.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  private frame (event: string, data: unknown): string {
    return `id: ${this.nextId++}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`
  }

  private arm (): void {
    this.timer = this.components.clock.setTimeout(() => {
      this.timer = undefined
      if (this.clients.size === 0) return
      for (const res of this.clients) res.write(': keep-alive\n\n')
      this.arm()
    }, this.init.heartbeatMs ?? 15_000)
  }
}
