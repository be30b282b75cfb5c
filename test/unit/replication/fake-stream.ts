/**
 * An in-memory stand-in for a libp2p v3 stream: what the code under test sends is recorded,
 * and the test delivers the peer's bytes as 'message' events. send() reports "needs drain" once
 * `writeLimit` bytes are outstanding until the test calls drain().
 */
import type { Uint8ArrayList } from 'uint8arraylist'
import type { StreamLike } from '../../../daemon/replication/channel.ts'
import { ReplicationDecoder, encodeReplicationItem, type ReplicationItem } from '../../../protocol/replication/index.ts'

type Listener = (evt: any) => void // eslint-disable-line @typescript-eslint/no-explicit-any

export class FakeStream implements StreamLike {
  readonly sent: Uint8Array[] = []
  private readonly listeners = new Map<string, Set<Listener>>()
  aborted: Error | undefined
  closedByUs = false
  paused = false
  pauses = 0
  outstanding = 0
  maxReadBufferLength = 4 * 1024 * 1024
  /** The negotiated protocol ID, as libp2p sets it (unset: a stream of this release). */
  protocol?: string

  constructor (private readonly writeLimit = Infinity) {}

  addEventListener (type: string, fn: Listener): void {
    let s = this.listeners.get(type)
    if (s === undefined) { s = new Set(); this.listeners.set(type, s) }
    s.add(fn)
  }

  removeEventListener (type: string, fn: Listener): void { this.listeners.get(type)?.delete(fn) }

  emit (type: string, evt: unknown = {}): void { for (const fn of [...(this.listeners.get(type) ?? [])]) fn(evt) }

  /**
   * Plays a target of this release that holds nothing by content: each haveQuery sent is
   * answered at once with all flags false (a sender on a stream without a protocol speaks 1.2.0).
   */
  answerHaveQueries = false
  private readonly sentDecoder = new ReplicationDecoder()

  send (data: Uint8Array | Uint8ArrayList): boolean {
    if (this.aborted !== undefined || this.closedByUs) throw new Error('stream closed')
    this.sent.push(data instanceof Uint8Array ? new Uint8Array(data) : data.subarray())
    if (this.answerHaveQueries) {
      for (const item of this.sentDecoder.push(this.sent[this.sent.length - 1] as Uint8Array)) {
        if (item.type === 'haveQuery') {
          const answer = encodeReplicationItem({ type: 'haveAnswer', queryId: item.queryId, held: item.blocks.map(() => false) })
          queueMicrotask(() => { this.deliver(answer) })
        }
      }
    }
    this.outstanding += data.byteLength
    return this.outstanding < this.writeLimit
  }

  drain (): void { this.outstanding = 0; this.emit('drain') }
  pause (): void { this.paused = true; this.pauses++ }
  resume (): void { this.paused = false }
  abort (err: Error): void { if (this.aborted === undefined) { this.aborted = err; this.emit('close', { error: err }) } }
  async close (): Promise<void> { this.closedByUs = true; this.emit('close', {}) }

  /** The peer sends `bytes`. */
  deliver (bytes: Uint8Array): void { this.emit('message', { data: bytes }) }
  /** The peer half-closes. */
  end (): void { this.emit('remoteCloseWrite') }

  /** Everything we sent, decoded (as far as it decodes). */
  items (): ReplicationItem[] {
    const d = new ReplicationDecoder()
    const out: ReplicationItem[] = []
    try { for (const b of this.sent) out.push(...d.push(b)) } catch {}
    return out
  }
}

/** Polls `fn` while file-system work completes (bounded: about 10 s at most). */
export async function until (what: string, fn: () => boolean): Promise<void> {
  for (let i = 0; i < 20000; i++) {
    if (fn()) return
    await new Promise<void>(resolve => setTimeout(resolve, 5))
  }
  throw new Error(`never happened: ${what}`)
}

/** Resolves after pending I/O callbacks and microtasks ran (no timers involved). */
export async function flush (rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>(resolve => setImmediate(resolve))
}
