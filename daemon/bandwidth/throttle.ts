/**
 * Paces a byte stream through a limiter. Buffers are split into chunks (views, no copies) and
 * each chunk waits for its tokens before it is passed on, so a large frame leaves in steps of a
 * few tens of KiB instead of one line-speed burst followed by a long silence — a cap measured
 * over a few seconds then holds even with multi-MiB frames.
 */
import type { Uint8ArrayList } from 'uint8arraylist'

export interface Takes {
  take: (bytes: number, options?: { signal?: AbortSignal }) => Promise<void>
}

export interface ThrottleOptions {
  signal?: AbortSignal
  /** Largest piece passed on after one wait. @default 32768 */
  chunkBytes?: number
}

export async function * throttle (
  source: AsyncIterable<Uint8Array | Uint8ArrayList> | Iterable<Uint8Array | Uint8ArrayList>,
  limiter: Takes,
  options: ThrottleOptions = {}
): AsyncGenerator<Uint8Array, void, undefined> {
  const chunk = Math.max(1, Math.floor(options.chunkBytes ?? 32768))
  const signal = options.signal
  for await (const item of source) {
    const bufs = item instanceof Uint8Array ? [item] : item
    for (const buf of bufs) {
      for (let pos = 0; pos < buf.byteLength; pos += chunk) {
        const piece = buf.subarray(pos, Math.min(buf.byteLength, pos + chunk))
        await limiter.take(piece.byteLength, { signal })
        yield piece
      }
    }
  }
}
