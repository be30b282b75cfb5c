/**
 * Progress of long work in the CLI (seeding, verify, restore, planned failover): one bar per task
 * with bytes done, rate and ETA (cli-progress) on a terminal; plain lines (every few seconds
 * and at each 10 %) when stderr is not a terminal; JSON lines with `--json`. Everything goes
 * to stderr, so stdout keeps its one result document. Rate is a moving average over the
 * last samples, so a stall shows as a falling rate and a growing ETA, not a frozen one.
 */
import { MultiBar, type SingleBar } from 'cli-progress'
import { formatBytes } from '../../config/units.ts'

export type ProgressMode = 'bar' | 'lines' | 'json'

export function progressMode (opts: { json?: boolean }, stream: NodeJS.WriteStream = process.stderr): ProgressMode {
  if (opts.json === true) return 'json'
  return stream.isTTY === true ? 'bar' : 'lines'
}

export interface ProgressSample { doneBytes: number, totalBytes: number, phase?: string, rateBytesPerSec?: number }

export interface ProgressTask {
  update: (s: ProgressSample) => void
  finish: (phase?: string) => void
}

/** Bytes per second from the samples of the last `windowMs`. */
export class RateMeter {
  private readonly samples: Array<{ t: number, v: number }> = []
  constructor (private readonly windowMs = 10_000) {}
  add (t: number, v: number): void {
    this.samples.push({ t, v })
    while (this.samples.length > 2 && t - (this.samples[0] as { t: number }).t > this.windowMs) this.samples.shift()
  }

  rate (): number | undefined {
    const a = this.samples[0]; const b = this.samples[this.samples.length - 1]
    if (a === undefined || b === undefined || b.t - a.t < 500) return undefined
    return Math.max(0, (b.v - a.v) / ((b.t - a.t) / 1000))
  }
}

export function etaSeconds (remainingBytes: number, rate: number | undefined): number | undefined {
  if (rate === undefined || rate <= 0) return undefined
  return remainingBytes / rate
}

export function formatEta (s: number | undefined): string {
  if (s === undefined || !Number.isFinite(s)) return '--'
  if (s < 60) return `${Math.ceil(s)}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.ceil(s % 60)).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** One line for a sample (the plain-line mode, and the bar's payload). */
export function describe (label: string, s: ProgressSample, rate: number | undefined): string {
  const pct = s.totalBytes > 0 ? Math.min(100, 100 * s.doneBytes / s.totalBytes) : 0
  return `${label}: ${pct.toFixed(0)}% ${formatBytes(s.doneBytes)}/${formatBytes(s.totalBytes)}${rate !== undefined ? ` ${formatBytes(rate)}/s` : ''} ETA ${formatEta(etaSeconds(s.totalBytes - s.doneBytes, rate))}${s.phase !== undefined ? ` (${s.phase})` : ''}`
}

/** The tasks of one command: bars share one terminal block. */
export class Progress {
  private multi: MultiBar | undefined
  private readonly now: () => number

  constructor (private readonly mode: ProgressMode, private readonly out: NodeJS.WritableStream = process.stderr, now?: () => number) {
    this.now = now ?? (() => Date.now())
    if (mode === 'bar') {
      this.multi = new MultiBar({
        stream: out,
        format: '{label} [{bar}] {percentage}% | {done}/{total} | {rate} | ETA {etaText} {phase}',
        barsize: 30,
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        fps: 5
      })
    }
  }

  task (label: string): ProgressTask {
    const meter = new RateMeter()
    let last = { at: 0, pct: -1 }
    let bar: SingleBar | undefined
    let lastSample: ProgressSample = { doneBytes: 0, totalBytes: 0 }
    const rateOf = (s: ProgressSample): number | undefined => s.rateBytesPerSec ?? meter.rate()
    return {
      update: (s) => {
        const t = this.now()
        meter.add(t, s.doneBytes)
        lastSample = s
        const rate = rateOf(s)
        const eta = etaSeconds(s.totalBytes - s.doneBytes, rate)
        if (this.mode === 'json') {
          this.out.write(JSON.stringify({ progress: label, doneBytes: s.doneBytes, totalBytes: s.totalBytes, rateBytesPerSec: rate ?? null, etaSeconds: eta === undefined ? null : Math.round(eta), ...(s.phase !== undefined ? { phase: s.phase } : {}) }) + '\n')
        } else if (this.mode === 'lines') {
          const pct = s.totalBytes > 0 ? Math.floor(10 * s.doneBytes / s.totalBytes) : 0
          if (t - last.at >= 5000 || pct !== last.pct) { this.out.write(describe(label, s, rate) + '\n'); last = { at: t, pct } }
        } else {
          const payload = { label, done: formatBytes(s.doneBytes), total: formatBytes(s.totalBytes), rate: rate !== undefined ? `${formatBytes(rate)}/s` : '--', etaText: formatEta(eta), phase: s.phase ?? '' }
          const total = Math.max(1, s.totalBytes)
          if (bar === undefined) bar = this.multi?.create(total, Math.min(s.doneBytes, total), payload)
          else { bar.setTotal(total); bar.update(Math.min(s.doneBytes, total), payload) }
        }
      },
      finish: (phase) => {
        const s = { ...lastSample, doneBytes: lastSample.totalBytes, ...(phase !== undefined ? { phase } : {}) }
        if (this.mode === 'json') this.out.write(JSON.stringify({ progress: label, done: true, doneBytes: s.doneBytes, totalBytes: s.totalBytes, ...(phase !== undefined ? { phase } : {}) }) + '\n')
        else if (this.mode === 'lines') this.out.write(`${label}: done${phase !== undefined ? ` (${phase})` : ''}\n`)
        else if (bar !== undefined) bar.update(Math.max(1, s.totalBytes), { label, done: formatBytes(s.doneBytes), total: formatBytes(s.totalBytes), rate: '--', etaText: '0s', phase: phase ?? 'done' })
      }
    }
  }

  stop (): void { this.multi?.stop() }
}

/** What the CLI reads of a daemon's operation (`GET /v1/operations?id=`; daemon/status.ts OperationStatus). */
export interface OperationView { state: 'running' | 'done' | 'failed', phase: string, doneBytes: number, totalBytes: number, rateBytesPerSec: number | null }

/**
 * Shows `task` following the daemon's own count of an operation while `work` (the request that
 * runs it) is in flight: `read` polls the operation (undefined until the daemon lists it, or
 * when it cannot be read — the bar then waits). Resolves or rejects with `work`.
 */
export async function followOperation<T> (task: ProgressTask, read: () => Promise<OperationView | undefined>, work: Promise<T>, o: { periodMs?: number, sleep?: (ms: number) => Promise<void> } = {}): Promise<T> {
  const sleep = o.sleep ?? (async (ms: number) => { await new Promise(resolve => setTimeout(resolve, ms)) })
  let settled = false
  const poll = (async () => {
    // bounded by `work`: it ends when the request settles
    while (!settled) {
      const v = await read().catch(() => undefined)
      if (settled) break
      if (v !== undefined) task.update({ doneBytes: v.doneBytes, totalBytes: v.totalBytes, phase: v.phase, ...(v.rateBytesPerSec !== null ? { rateBytesPerSec: v.rateBytesPerSec } : {}) })
      await sleep(o.periodMs ?? 500)
    }
  })()
  try { return await work } finally { settled = true; await poll }
}

/** A fresh operation id for a request (OPERATION_ID_RE on the daemon's side). */
export function newOperationId (kind: string): string {
  return `cli-${kind}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
}

/** The operation `id` as the daemon counts it (undefined until it is listed). */
export async function readOperation (client: { call: <T>(method: 'GET', path: string) => Promise<T> }, id: string): Promise<OperationView | undefined> {
  const r = await client.call<{ operations: Array<OperationView & { id: string }> }>('GET', `/v1/operations?id=${encodeURIComponent(id)}`)
  return r.operations.find(x => x.id === id)
}
