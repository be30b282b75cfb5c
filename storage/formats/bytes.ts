/** Small decoding helpers shared by the VHD and VHDX parsers. No I/O. */

/** 2^53: every offset and size the parsers accept must be below this. */
export const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER)

export function view (bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

export { isAllZero } from '../../common/zero.ts'

/** True when `bytes` starting at `offset` spell the ASCII `text`. */
export function hasAscii (bytes: Uint8Array, offset: number, text: string): boolean {
  if (offset < 0 || offset + text.length > bytes.length) return false
  for (let i = 0; i < text.length; i++) if (bytes[offset + i] !== text.charCodeAt(i)) return false
  return true
}

/** Printable ASCII of a fixed-width field (e.g. VHD creator application), NULs trimmed. */
export function asciiField (bytes: Uint8Array, offset: number, length: number): string {
  let s = ''
  for (let i = offset; i < offset + length && i < bytes.length; i++) {
    const c = bytes[i] as number
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : (c === 0 ? '' : '?')
  }
  return s
}

/** 16 bytes as lowercase hex in 8-4-4-4-12 groups, in stored byte order (VHD unique ids). */
export function uuidRaw (bytes: Uint8Array, offset: number): string {
  let h = ''
  for (let i = 0; i < 16; i++) h += (bytes[offset + i] ?? 0).toString(16).padStart(2, '0')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
}

/** A Microsoft GUID as stored (Data1..3 little-endian) in its canonical lowercase text form. */
export function msGuid (bytes: Uint8Array, offset: number): string {
  const b = (i: number): string => (bytes[offset + i] ?? 0).toString(16).padStart(2, '0')
  return `${b(3)}${b(2)}${b(1)}${b(0)}-${b(5)}${b(4)}-${b(7)}${b(6)}-${b(8)}${b(9)}-` +
    `${b(10)}${b(11)}${b(12)}${b(13)}${b(14)}${b(15)}`
}

/** The 16 stored bytes of a GUID given in canonical text form (inverse of msGuid). */
export function msGuidBytes (guid: string): Uint8Array {
  const hex = guid.replace(/-/g, '')
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new TypeError(`bad GUID ${guid}`)
  const raw = Uint8Array.from({ length: 16 }, (_, i) => parseInt(hex.slice(i * 2, i * 2 + 2), 16))
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15]
  return Uint8Array.from(order, i => raw[i] as number)
}

const utf16le = new TextDecoder('utf-16le', { fatal: true })
const utf16be = new TextDecoder('utf-16be', { fatal: true })

/**
 * UTF-16 text, cut at the first NUL code unit. Returns null when the bytes are not valid UTF-16
 * (odd length, lone surrogate) so the caller can raise its own typed error.
 */
export function decodeUtf16 (bytes: Uint8Array, bigEndian: boolean): string | null {
  if (bytes.length % 2 !== 0) return null
  let end = bytes.length
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    if (bytes[i] === 0 && bytes[i + 1] === 0) { end = i; break }
  }
  try {
    return (bigEndian ? utf16be : utf16le).decode(bytes.subarray(0, end))
  } catch {
    return null
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/** UTF-8 text cut at the first NUL, or null when invalid. */
export function decodeUtf8 (bytes: Uint8Array): string | null {
  const nul = bytes.indexOf(0)
  try {
    return utf8.decode(nul >= 0 ? bytes.subarray(0, nul) : bytes)
  } catch {
    return null
  }
}

/** True for 2^k, k ≥ 0, within the safe integer range. */
export function isPowerOfTwo (n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n
}
