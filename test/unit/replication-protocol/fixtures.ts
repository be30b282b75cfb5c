/** Sample control messages and delta frames shared by the replication protocol tests. */
import type { Random } from '../../../common/random.ts'
import { encodeBlock } from '../../../protocol/delta/block.ts'
import { FileKind } from '../../../protocol/delta/messages.ts'
import type { Frame } from '../../../protocol/delta/messages.ts'
import { CONTROL_PROTOCOL_VERSION, HASH_LENGTH, NackCode, SeedMode } from '../../../protocol/replication/messages.ts'
import type { ControlMessage } from '../../../protocol/replication/messages.ts'

export const MAX = Number.MAX_SAFE_INTEGER

export function hash (seed: number): Uint8Array {
  const h = new Uint8Array(HASH_LENGTH)
  for (let i = 0; i < HASH_LENGTH; i++) h[i] = (seed * 31 + i * 7) & 0xff
  return h
}

/** At least one message of every type, with edge values and optional fields both ways. */
export function sampleMessages (): ControlMessage[] {
  return [
    {
      type: 'hello',
      protocolVersion: CONTROL_PROTOCOL_VERSION,
      vm: 'web01',
      sourceNode: 'hv-a',
      epoch: 3,
      files: [
        { fileId: 0, path: '/vms/web01/web01.vhdx', kind: FileKind.Disk, size: 4 * 1024 ** 3, blockSize: 1 << 20 },
        { fileId: 7, path: '/vms/web01/web01.vmcx', kind: FileKind.WholeFile, size: 0, blockSize: 65536 }
      ],
      seedMode: SeedMode.Full
    },
    {
      type: 'hello',
      protocolVersion: 0xffff,
      vm: 'vm-ü-🚀',
      sourceNode: 'n'.repeat(255),
      files: [{ fileId: 0xffff_ffff, path: 'C:\\VMs\\db.vhd', kind: FileKind.Disk, size: MAX, blockSize: 4 * 1024 * 1024 }],
      seedMode: SeedMode.Existing
    },
    { type: 'targetState', vm: 'web01', appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: null, diskFree: 0 },
    {
      type: 'targetState',
      vm: 'web01',
      appliedGeneration: MAX,
      appliedConsistentGeneration: 41,
      seeding: {
        generation: 42,
        durableRanges: [
          { fileId: 0, offset: 0, length: 1 << 20 },
          { fileId: 0, offset: (1 << 20) + 1, length: 5 },
          { fileId: 3, offset: 0, length: MAX }
        ]
      },
      diskFree: 123_456_789_012
    },
    { type: 'targetState', vm: 'x', appliedGeneration: 5, appliedConsistentGeneration: 5, seeding: { generation: 1, durableRanges: [] }, diskFree: MAX },
    { type: 'ack', generation: 42, durable: true, appliedAtMs: 1_700_000_000_000 },
    { type: 'ack', generation: MAX, durable: false, appliedAtMs: 0 },
    { type: 'nack', generation: 43, code: NackCode.ChecksumMismatch, message: 'block 0:4096 failed its checksum' },
    { type: 'nack', generation: 44, code: NackCode.DiskFull, message: '', retryAfterMs: 30_000 },
    { type: 'refuse', generation: 0, code: NackCode.Busy, message: 'seeding another VM', retryAfterMs: 0 },
    { type: 'refuse', generation: 9, code: NackCode.Internal, message: 'é'.repeat(512) },
    { type: 'nack', generation: 1, code: NackCode.BaseMismatch, message: 'base 3, applied 5' },
    { type: 'nack', generation: 1, code: NackCode.ProtocolError, message: 'bad frame' },
    { type: 'hashRequest', requestId: 1, fileId: 0, offset: 0, length: 1 << 30, blockSize: 1 << 20 },
    { type: 'hashRequest', requestId: 0xffff_ffff, fileId: 2, offset: MAX - 1, length: 1, blockSize: 1 },
    { type: 'hashResponse', requestId: 1, fileId: 0, offset: 0, blockSize: 1 << 20, hashes: [hash(1), hash(2), hash(3)], last: false },
    { type: 'hashResponse', requestId: 1, fileId: 0, offset: 3 << 20, blockSize: 1 << 20, hashes: [], last: true },
    { type: 'resend', generation: 42, fileId: 0, offset: 4096, length: 4096 },
    { type: 'resend', generation: 0, fileId: 0xffff_ffff, offset: 0, length: MAX },
    { type: 'ping', nonce: 7, timestampMs: 123_456 },
    { type: 'pong', nonce: 0xffff_ffff, echoTimestampMs: 123_456, timestampMs: MAX },
    { type: 'haveQuery', queryId: 1, generation: 1, fileId: 0, blocks: [{ offset: 0, length: 65536, hash: hash(4) }, { offset: 65536, length: 65536, hash: hash(5) }, { offset: 3 << 20, length: 100, hash: hash(6) }] },
    { type: 'haveQuery', queryId: 0xffff_ffff, generation: MAX, fileId: 0xffff_ffff, blocks: [{ offset: MAX - 1, length: 1, hash: hash(7) }] },
    { type: 'haveAnswer', queryId: 1, held: [true, false, true] },
    { type: 'haveAnswer', queryId: 9, held: [false, false, false, false, false, false, false, true, true] },
    {
      type: 'hello',
      protocolVersion: CONTROL_PROTOCOL_VERSION,
      vm: 'web01',
      sourceNode: 'hv-a',
      epoch: 9,
      retention: { count: 24, keepAllWithinMs: 3_600_000, hourlyBeyond: true },
      files: [{ fileId: 1, path: '/vms/web01/web01.vhdx', kind: FileKind.Disk, size: 1 << 30, blockSize: 65536 }],
      seedMode: SeedMode.Full
    },
    {
      type: 'hello',
      protocolVersion: CONTROL_PROTOCOL_VERSION,
      vm: 'db',
      sourceNode: 'hv-b',
      retention: { count: 0, keepAllWithinMs: MAX, hourlyBeyond: false },
      files: [{ fileId: 0, path: '/vms/db.img', kind: FileKind.Disk, size: 0, blockSize: 4096 }],
      seedMode: SeedMode.Existing
    }
  ]
}

/** A small valid generation: begin, one blocks frame, end. */
export function sampleGeneration (rng: Random): Frame[] {
  const raw = new Uint8Array(4096)
  for (let i = 0; i < raw.length; i++) raw[i] = rng.int(4) // compressible
  const zero = new Uint8Array(4096)
  return [
    {
      type: 'begin',
      vm: 'web01',
      generation: 42,
      baseGeneration: 41,
      consistent: true,
      createdAtMs: 1_700_000_000_000,
      files: [{ fileId: 0, path: '/vms/web01/web01.vhdx', size: 1 << 20, blockSize: 4096, kind: FileKind.Disk }]
    },
    { type: 'blocks', fileId: 0, entries: [{ offset: 0, ...encodeBlock(raw) }, { offset: 8192, ...encodeBlock(zero) }] },
    { type: 'end', generation: 42, blockCount: 2, byteCount: 8192 }
  ]
}

/** Splits `bytes` into chunks of random sizes (including empty ones). */
export function randomChunks (rng: Random, bytes: Uint8Array, maxChunk: number): Uint8Array[] {
  const out: Uint8Array[] = []
  let pos = 0
  for (let guard = 0; pos < bytes.byteLength && guard < bytes.byteLength * 2 + 10; guard++) {
    const n = rng.int(maxChunk + 1)
    out.push(bytes.subarray(pos, Math.min(bytes.byteLength, pos + n)))
    pos += n
  }
  if (pos < bytes.byteLength) out.push(bytes.subarray(pos))
  return out
}

export function concat (parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0))
  let pos = 0
  for (const p of parts) { out.set(p, pos); pos += p.byteLength }
  return out
}

/** Compares decoded items structurally, with Uint8Array views compared by content. */
export function normalize (x: unknown): unknown {
  if (x instanceof Uint8Array) return Array.from(x)
  if (Array.isArray(x)) return x.map(normalize)
  if (x !== null && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, normalize(v)]))
  return x
}
