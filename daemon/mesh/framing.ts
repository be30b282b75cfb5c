/**
 * Length-prefixed frames on a byte stream: u32 big-endian length, then the body. The decoder
 * refuses a declared length over `maxFrameBytes` before buffering anything of it, so a hostile
 * peer cannot make us allocate.
 */
import { Uint8ArrayList } from 'uint8arraylist'
import { VmeshError } from '../../common/errors.ts'

export class FrameTooLargeError extends VmeshError {
  constructor (readonly length: number, readonly limit: number) {
    super('ERR_FRAME_TOO_LARGE', `frame of ${length} bytes exceeds the limit of ${limit}`)
  }
}

export function encodeLengthPrefixed (body: Uint8Array): Uint8ArrayList {
  const head = new Uint8Array(4)
  new DataView(head.buffer).setUint32(0, body.byteLength)
  return new Uint8ArrayList(head, body)
}

export class LengthPrefixedDecoder {
  private readonly buf = new Uint8ArrayList()
  constructor (private readonly maxFrameBytes: number) {}

  /** Appends a chunk and returns every complete frame; throws FrameTooLargeError. */
  push (chunk: Uint8Array | Uint8ArrayList): Uint8Array[] {
    this.buf.append(chunk)
    const out: Uint8Array[] = []
    for (;;) {
      if (this.buf.byteLength < 4) break
      const len = this.buf.getUint32(0)
      if (len > this.maxFrameBytes) throw new FrameTooLargeError(len, this.maxFrameBytes)
      if (this.buf.byteLength < 4 + len) break
      out.push(this.buf.subarray(4, 4 + len))
      this.buf.consume(4 + len)
    }
    return out
  }

  get buffered (): number { return this.buf.byteLength }
}
