/**
 * Bounds the bytes a replication sender has in flight to about one round trip of what the path
 * delivers (BBR-like), so a link with no configured limit is filled without filling queues.
 *
 * Flow: the sender asks `waitForRoom()` before each piece it writes and reports it with
 * `onSent(n)`; after each piece it sends a probe — a replication `ping` whose nonce comes from
 * `probe()`. The target answers pings the moment they arrive, ahead of its apply queue, and the
 * stream is in order, so a pong proves that every byte written before its ping reached the target
 * process: `onPong(nonce)` moves `delivered` there. From those acks the pacer keeps
 *   - minRtt: the smallest probe round trip seen in the last `rttWindowMs` (the path without queue)
 *   - btlBw:  the largest delivery rate seen in the last `bwWindowMs`, each sample measured as in
 *             BBR: bytes delivered since the probe was sent / time since the delivery recorded then
 * and allows `cap = max(floorBytes, gain × btlBw × minRtt, btlBw × queueMs)` bytes in flight. The
 * last term is for short paths where the receiver, not the link, is the bottleneck (loopback, a
 * LAN): its event loop answers a probe between its own work (checksums, writes), so the smallest
 * round trip is an idle moment's and far below the usual one. Measured during a 1 GiB loopback
 * seed: minRtt 0.4–1.2 ms, p50 3–9 ms, so 2 × BDP by minRtt held the cap at 250–440 KB and the
 * seed ran at ~50 MB/s (20 s; 216 MB/s before pacing). `queueMs` of the measured rate in flight
 * lets the rate grow to what the receiver takes while keeping at most about that much queue
 * (and at most `queueMaxBytes`) ahead of control traffic; on a WAN path 2 × BDP is the larger
 * term. Before any sample
 * the cap is the floor; each round trip it can at most double (the rate measured is bounded by
 * the cap), which is BBR's startup. A min RTT older than `rttWindowMs` is measured again as in
 * BBR's ProbeRTT: the cap drops to `probeRttBytes` until the queue drained and `probeRttMs`
 * passed, and the smallest round trip seen meanwhile becomes the new min (without this, RTTs
 * that include our own queue would ratchet the cap, and the queue, upwards). Whatever sits in libp2p's yamux buffer, the kernel's send
 * queue and the bottleneck's queue is part of "in flight", so control traffic that shares the
 * connection (membership probes, elections, acks, libp2p's ping) waits behind at most about
 * (gain − 1) round trips of data.
 *
 * A pure state machine on an injected clock: nothing here touches a stream.
 */
import type { Clock } from '../../common/clock.ts'
import { AbortedError } from '../../common/errors.ts'

export interface PacerInit {
  /** In-flight bytes always allowed (startup, tiny BDPs): two of the smallest frames. @default 128 KiB */
  floorBytes?: number
  /** Cap on in-flight bytes whatever the estimate. @default 64 MiB */
  ceilingBytes?: number
  /** Multiple of the estimated BDP allowed in flight. @default 2 */
  gain?: number
  /** In flight always allowed: this many ms of the measured delivery rate (see the file comment). @default 20 */
  queueMs?: number
  /**
   * At most this many bytes from the queueMs term: bursts of late pongs inflate the max-filtered
   * rate (a loopback seed measured 820 MB/s of "delivery" against ~130 MB/s real), and the
   * inflated cap would grow the queue, and the wait of control traffic behind it. @default 8 MiB
   */
  queueMaxBytes?: number
  /** Window of the delivery-rate max filter. @default 3000 ms */
  bwWindowMs?: number
  /** Age after which the min RTT is measured again (ProbeRTT). @default 10000 ms */
  rttWindowMs?: number
  /** In-flight cap while the min RTT is measured again. @default 64 KiB */
  probeRttBytes?: number
  /** Time spent with the queue drained in ProbeRTT (at least one round trip). @default 200 ms */
  probeRttMs?: number
  /** Probes outstanding at most (older ones are forgotten). @default 4096 */
  maxProbes?: number
}

/** Probe round trips kept for percentiles. */
const RTT_RING = 4096

interface Probe { nonce: number, sent: number, at: number, delivered: number, deliveredAt: number }
interface Sample { at: number, value: number }

export interface PacerStats {
  /** bytes/s, 0 before the first sample */
  btlBwBytesPerSec: number
  /** ms, undefined before the first sample */
  minRttMs: number | undefined
  /** true while the min RTT is being measured again (small cap) */
  probingRtt: boolean
  /** the newest probe round trip (ms), undefined before the first */
  lastRttMs: number | undefined
  /** median and 99th percentile of the last RTT_RING probe round trips (ms) */
  rttP50Ms: number | undefined
  rttP99Ms: number | undefined
  rttSamples: number
  capBytes: number
  inflightBytes: number
  sentBytes: number
  deliveredBytes: number
}

export class InflightPacer {
  private sent = 0
  private delivered = 0
  private deliveredAt: number
  private nonce = 1
  private readonly probes: Probe[] = []
  private bw: Sample[] = []
  private rttMin: number | undefined
  private rttMinAt = 0
  /** ProbeRTT: undefined when not probing; drainedAt once inflight fell to the probe cap */
  private probing: { drainedAt: number | undefined, min: number } | undefined
  private lastRtt: number | undefined
  private readonly rttRing = new Float64Array(RTT_RING)
  private rttCount = 0
  private waiters: Array<() => void> = []
  private ended: Error | undefined
  private readonly floor: number
  private readonly ceiling: number
  private readonly gain: number
  private readonly queueMs: number
  private readonly queueMax: number
  private readonly bwWindow: number
  private readonly rttWindow: number
  private readonly maxProbes: number
  private readonly probeBytes: number
  private readonly probeMs: number

  constructor (private readonly clock: Clock, init: PacerInit = {}) {
    this.floor = init.floorBytes ?? 128 * 1024
    this.ceiling = Math.max(this.floor, init.ceilingBytes ?? 64 * 1024 * 1024)
    this.gain = init.gain ?? 2
    this.queueMs = init.queueMs ?? 20
    this.queueMax = init.queueMaxBytes ?? 8 * 1024 * 1024
    this.bwWindow = init.bwWindowMs ?? 3000
    this.rttWindow = init.rttWindowMs ?? 10_000
    this.maxProbes = init.maxProbes ?? 4096
    this.probeBytes = init.probeRttBytes ?? 64 * 1024
    this.probeMs = init.probeRttMs ?? 200
    this.deliveredAt = clock.now()
  }

  get inflight (): number { return this.sent - this.delivered }

  /** Bytes allowed in flight now. */
  get cap (): number {
    this.tick()
    if (this.probing !== undefined) return this.probeBytes
    const bw = this.btlBw()
    const rtt = this.rttMin
    if (bw === 0 || rtt === undefined) return this.floor
    return Math.min(this.ceiling, Math.max(this.floor, Math.ceil(this.gain * bw * rtt / 1000), Math.min(this.queueMax, Math.ceil(bw * this.queueMs / 1000))))
  }

  /** Estimated bandwidth-delay product (bytes), 0 before the first sample. */
  get bdp (): number {
    const rtt = this.rttMin
    return rtt === undefined ? 0 : this.btlBw() * rtt / 1000
  }

  stats (): PacerStats {
    const n = Math.min(this.rttCount, RTT_RING)
    const sorted = this.rttRing.slice(0, n).sort()
    const pct = (q: number): number | undefined => n === 0 ? undefined : sorted[Math.min(n - 1, Math.floor(q * n))]
    return { btlBwBytesPerSec: this.btlBw(), minRttMs: this.rttMin, probingRtt: this.probing !== undefined, lastRttMs: this.lastRtt, rttP50Ms: pct(0.5), rttP99Ms: pct(0.99), rttSamples: this.rttCount, capBytes: this.cap, inflightBytes: this.inflight, sentBytes: this.sent, deliveredBytes: this.delivered }
  }

  /** `n` bytes were handed to the stream. */
  onSent (n: number): void { this.sent += n }

  /**
   * Records a probe covering everything sent so far; returns the nonce (u32) to put in the ping.
   */
  probe (): number {
    const nonce = this.nonce
    this.nonce = (this.nonce + 1) >>> 0 === 0 ? 1 : (this.nonce + 1) >>> 0
    this.probes.push({ nonce, sent: this.sent, at: this.clock.now(), delivered: this.delivered, deliveredAt: this.deliveredAt })
    if (this.probes.length > this.maxProbes) this.probes.shift()
    return nonce
  }

  /** A pong for `nonce` arrived; unknown nonces (other pings, forgotten probes) are ignored. */
  onPong (nonce: number): void {
    const i = this.probes.findIndex(p => p.nonce === nonce)
    if (i < 0) return
    const p = this.probes[i] as Probe
    // pongs come back in order: every older probe is answered too
    this.probes.splice(0, i + 1)
    const now = this.clock.now()
    const rtt = Math.max(0.001, now - p.at)
    this.lastRtt = rtt
    this.rttRing[this.rttCount++ % RTT_RING] = rtt
    if (this.rttMin === undefined || rtt <= this.rttMin) { this.rttMin = rtt; this.rttMinAt = now }
    // only probes sent after the queue drained measure the bare path
    const pr = this.probing
    if (pr?.drainedAt !== undefined && p.at >= pr.drainedAt) pr.min = Math.min(pr.min, rtt)
    if (p.sent > this.delivered) {
      this.delivered = p.sent
      this.deliveredAt = now
      const interval = Math.max(rtt, now - p.deliveredAt)
      const rate = (this.delivered - p.delivered) / (interval / 1000)
      // ProbeRTT's deliberately small window says nothing about the path's rate
      if (this.probing === undefined) push(this.bw, { at: now, value: rate }, this.bwWindow, (a, b) => a >= b)
    }
    this.tick()
    this.wakeAll()
  }

  /** Resolves once `inflight < cap` (at once when already so); rejects when `signal` aborts. */
  async waitForRoom (signal?: AbortSignal): Promise<void> {
    // bounded: each pass waits for one pong (or the abort) and re-checks
    while (this.inflight >= this.cap) {
      if (this.ended !== undefined) throw this.ended
      if (signal?.aborted === true) throw new AbortedError('pacing wait aborted', { cause: signal.reason })
      await new Promise<void>((resolve) => {
        const onAbort = (): void => { done() }
        const done = (): void => { signal?.removeEventListener('abort', onAbort); resolve() }
        signal?.addEventListener('abort', onAbort, { once: true })
        this.waiters.push(done)
      })
    }
  }

  /** The stream ended: every wait, now and later, throws `err`. */
  end (err: Error): void {
    this.ended ??= err
    this.wakeAll()
  }

  /** Wakes every waiter (they re-check the cap, their signal and whether the stream ended). */
  wakeAll (): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  private btlBw (): number {
    expire(this.bw, this.clock.now(), this.bwWindow)
    return this.bw[0]?.value ?? 0
  }

  /** ProbeRTT transitions. */
  private tick (): void {
    const now = this.clock.now()
    if (this.probing === undefined) {
      if (this.rttMin !== undefined && now - this.rttMinAt > this.rttWindow) this.probing = { drainedAt: undefined, min: Infinity }
      return
    }
    const pr = this.probing
    if (pr.drainedAt === undefined) {
      if (this.inflight <= this.probeBytes) pr.drainedAt = now
      return
    }
    if (now - pr.drainedAt >= Math.max(this.probeMs, this.rttMin ?? 0) && Number.isFinite(pr.min)) {
      this.rttMin = pr.min
      this.rttMinAt = now
      this.probing = undefined
      // the bandwidth filter keeps its samples: the window before the probe still holds
    }
  }
}

/**
 * Windowed extremum (monotonic deque): the head is the best sample of the window. `better(a, b)`
 * tells whether a new value `a` makes an older `b` useless.
 */
function push (q: Sample[], s: Sample, windowMs: number, better: (a: number, b: number) => boolean): void {
  while (q.length > 0 && better(s.value, (q[q.length - 1] as Sample).value)) q.pop()
  q.push(s)
  expire(q, s.at, windowMs)
}

function expire (q: Sample[], now: number, windowMs: number): void {
  // the newest sample always stays: an idle period keeps the last estimate
  while (q.length > 1 && (q[0] as Sample).at < now - windowMs) q.shift()
}
