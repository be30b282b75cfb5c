import assert from 'node:assert/strict'
import { checkControlHeader, decodeControl, encodeControl, hashResponses } from '../../../protocol/replication/codec.ts'
import { errorFromRejection, nackCodeFor } from '../../../protocol/replication/error-codes.ts'
import { ReplicationProtocolError, isPeerProtocolError } from '../../../protocol/replication/errors.ts'
import { REPLICATION_PROTOCOL, REPLICATION_PROTOCOL_1_0, REPLICATION_PROTOCOL_1_1, streamCarriesHaveQuery } from '../../../protocol/replication/ids.ts'
import { DEFAULT_CONTROL_LIMITS, maxBodyBytes } from '../../../protocol/replication/limits.ts'
import { ControlType, FileKind, NackCode, SeedMode } from '../../../protocol/replication/messages.ts'
import type { ControlMessage, HelloMessage, TargetStateMessage } from '../../../protocol/replication/messages.ts'
import { durableRanges, mergeRanges } from '../../../protocol/replication/ranges.ts'
import { DeltaChecksumMismatchError, DeltaOverlapError } from '../../../protocol/delta/errors.ts'
import { VmeshError } from '../../../common/errors.ts'
import { MAX, hash, normalize, sampleMessages } from './fixtures.ts'

/** A control frame with a hand-built body. */
function frame (type: number, body: number[] | Uint8Array): Uint8Array {
  const b = body instanceof Uint8Array ? body : Uint8Array.from(body)
  const out = new Uint8Array(5 + b.byteLength)
  out[0] = type
  new DataView(out.buffer).setUint32(1, b.byteLength)
  out.set(b, 5)
  return out
}

function u64 (v: bigint): number[] {
  const b = new Uint8Array(8)
  new DataView(b.buffer).setBigUint64(0, v)
  return Array.from(b)
}

const rejects = (bytes: Uint8Array, code: string): void => {
  assert.throws(() => decodeControl(bytes), (err: VmeshError) => {
    assert.ok(err instanceof ReplicationProtocolError, `${err.name} is not a ReplicationProtocolError`)
    assert.equal(err.code, code)
    return true
  })
}

describe('replication control codec', () => {
  it('has its protocol id', () => {
    assert.equal(REPLICATION_PROTOCOL, '/vmesh/replication/1.2.0')
  })

  it('round-trips every message type, byte-exact', () => {
    const seen = new Set<string>()
    for (const msg of sampleMessages()) {
      const bytes = encodeControl(msg)
      assert.equal(bytes[0], ControlType[(msg.type[0]?.toUpperCase() ?? '') + msg.type.slice(1) as keyof typeof ControlType])
      const back = decodeControl(bytes)
      assert.deepEqual(normalize(back), normalize(msg))
      assert.deepEqual(encodeControl(back), bytes)
      seen.add(msg.type)
    }
    assert.deepEqual([...seen].sort(), ['ack', 'hashRequest', 'hashResponse', 'haveAnswer', 'haveQuery', 'hello', 'nack', 'ping', 'pong', 'refuse', 'resend', 'targetState'])
  })

  it('uses the 64+ type range, apart from the delta frames (1–15)', () => {
    for (const msg of sampleMessages()) {
      const t = encodeControl(msg)[0] as number
      assert.ok(t >= 64 && t <= 127, `type ${t}`)
    }
    assert.equal(ControlType.Hello, 64)
    assert.equal(ControlType.Pong, 73)
    assert.equal(ControlType.HaveQuery, 74)
    assert.equal(ControlType.HaveAnswer, 75)
    assert.equal(NackCode.DiskFull, 1)
    assert.equal(NackCode.Internal, 6)
  })

  it('refuses unknown types and impossible header lengths before reading a body', () => {
    rejects(frame(5, []), 'ERR_REPLICATION_UNKNOWN_FRAME')
    rejects(frame(1, []), 'ERR_REPLICATION_UNKNOWN_FRAME') // a delta type is not a control message
    rejects(frame(76, [1, 2, 3]), 'ERR_REPLICATION_UNKNOWN_FRAME')
    assert.throws(() => checkControlHeader(ControlType.Ack, 16, DEFAULT_CONTROL_LIMITS), { code: 'ERR_REPLICATION_MALFORMED_FRAME' })
    assert.throws(() => checkControlHeader(ControlType.Hello, 0xffff_ffff, DEFAULT_CONTROL_LIMITS), { code: 'ERR_REPLICATION_FRAME_TOO_LARGE' })
    assert.throws(() => checkControlHeader(ControlType.HashResponse, maxBodyBytes(ControlType.HashResponse, DEFAULT_CONTROL_LIMITS) + 1, DEFAULT_CONTROL_LIMITS), { code: 'ERR_REPLICATION_FRAME_TOO_LARGE' })
    assert.equal(checkControlHeader(ControlType.HashResponse, maxBodyBytes(ControlType.HashResponse, DEFAULT_CONTROL_LIMITS), DEFAULT_CONTROL_LIMITS), ControlType.HashResponse)
    rejects(new Uint8Array(0), 'ERR_REPLICATION_TRUNCATED')
    rejects(Uint8Array.of(66, 0, 0), 'ERR_REPLICATION_TRUNCATED')
    const ping = encodeControl({ type: 'ping', nonce: 1, timestampMs: 2 })
    rejects(ping.subarray(0, ping.byteLength - 1), 'ERR_REPLICATION_TRUNCATED')
    const extra = new Uint8Array(ping.byteLength + 1)
    extra.set(ping)
    rejects(extra, 'ERR_REPLICATION_MALFORMED_FRAME')
  })

  it('refuses reserved flag bits, unknown enums and u64 above 2^53 - 1', () => {
    const ack = encodeControl({ type: 'ack', generation: 1, durable: true, appliedAtMs: 5 })
    const badFlags = ack.slice(); badFlags[5 + 8] = 3
    rejects(badFlags, 'ERR_REPLICATION_MALFORMED_FRAME')
    rejects(frame(ControlType.Ack, [...u64(2n ** 53n), 1, ...u64(0n)]), 'ERR_REPLICATION_LIMIT_EXCEEDED')
    const nack = encodeControl({ type: 'nack', generation: 1, code: NackCode.Busy, message: '' })
    for (const code of [0, 7, 255]) {
      const b = nack.slice(); b[5 + 8] = code
      rejects(b, 'ERR_REPLICATION_BAD_ENUM')
    }
    const hello = encodeControl(sampleMessages()[0] as HelloMessage)
    const badSeed = hello.slice(); badSeed[5 + 3] = 2
    rejects(badSeed, 'ERR_REPLICATION_BAD_ENUM')
  })

  it('checks hello files: count, kind, block size, duplicate ids', () => {
    const base = sampleMessages()[0] as HelloMessage
    const withFiles = (files: HelloMessage['files']): HelloMessage => ({ ...base, files })
    assert.throws(() => encodeControl(withFiles([])), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    const f = base.files[0] as HelloMessage['files'][number]
    assert.throws(() => encodeControl(withFiles([f, { ...f, path: 'other' }])), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl(withFiles([{ ...f, blockSize: 0 }])), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl(withFiles([{ ...f, blockSize: 8 * 1024 * 1024 }])), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl(withFiles([{ ...f, kind: 9 as FileKind }])), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ ...base, vm: '' }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ ...base, vm: 'a\u0000b' }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ ...base, vm: '\ud800' }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ ...base, sourceNode: 'x'.repeat(256) }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    // decoder side: patch a valid two-file hello so both files carry id 0
    const two = encodeControl(withFiles([{ ...f, fileId: 0 }, { ...f, fileId: 1, path: 'b' }]))
    const idAt = two.byteLength - (4 + 1 + 4 + 8 + 2 + 1)
    assert.deepEqual(Array.from(two.subarray(idAt, idAt + 4)), [0, 0, 0, 1])
    const dup = two.slice(); dup[idAt + 3] = 0
    rejects(dup, 'ERR_REPLICATION_MALFORMED_FRAME')
    const bigBlock = two.slice(); bigBlock.set([0, 0x40, 0, 1], idAt + 5) // 4 MiB + 1
    rejects(bigBlock, 'ERR_REPLICATION_LIMIT_EXCEEDED')
    const kind = two.slice(); kind[idAt + 4] = 2
    rejects(kind, 'ERR_REPLICATION_BAD_ENUM')
    // a file count the body cannot hold is refused before looping
    const lie = two.slice()
    const countAt = idAt - (4 + 1 + 4 + 8 + 2 + f.path.length) - 4
    new DataView(lie.buffer).setUint32(countAt, 1000)
    rejects(lie, 'ERR_REPLICATION_MALFORMED_FRAME')
    new DataView(lie.buffer).setUint32(countAt, 1025)
    rejects(lie, 'ERR_REPLICATION_LIMIT_EXCEEDED')
  })

  it('targetState: durable ranges must be merged and bounded; consistent ≤ applied', () => {
    const ts = sampleMessages()[3] as TargetStateMessage
    const seeding = ts.seeding as NonNullable<TargetStateMessage['seeding']>
    const withRanges = (r: typeof seeding.durableRanges): TargetStateMessage => ({ ...ts, seeding: { ...seeding, durableRanges: r } })
    for (const bad of [
      [{ fileId: 0, offset: 0, length: 10 }, { fileId: 0, offset: 10, length: 5 }], // touching
      [{ fileId: 0, offset: 0, length: 10 }, { fileId: 0, offset: 5, length: 10 }], // overlapping
      [{ fileId: 1, offset: 0, length: 10 }, { fileId: 0, offset: 50, length: 10 }], // out of order
      [{ fileId: 0, offset: 0, length: 0 }] // empty
    ]) {
      assert.throws(() => encodeControl(withRanges(bad)), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
      // forge the same ranges on the wire: encode a valid list of the same size, then patch the offsets
      const good = bad.map((r, i) => ({ fileId: 0, offset: i * 100, length: 1 }))
      const bytes = encodeControl(withRanges(good))
      const view = new DataView(bytes.buffer, bytes.byteOffset)
      const first = bytes.byteLength - bad.length * 20
      bad.forEach((r, i) => {
        view.setUint32(first + i * 20, r.fileId)
        view.setBigUint64(first + i * 20 + 4, BigInt(r.offset))
        view.setBigUint64(first + i * 20 + 12, BigInt(r.length))
      })
      rejects(bytes, 'ERR_REPLICATION_BAD_RANGES')
    }
    assert.throws(() => encodeControl({ ...ts, appliedConsistentGeneration: MAX, appliedGeneration: 1 }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    const inverted = encodeControl({ ...ts, seeding: null, appliedGeneration: 5, appliedConsistentGeneration: 5 })
    new DataView(inverted.buffer).setBigUint64(5 + 2 + ts.vm.length + 8, 6n)
    rejects(inverted, 'ERR_REPLICATION_MALFORMED_FRAME')
    const many = Array.from({ length: DEFAULT_CONTROL_LIMITS.maxDurableRanges + 1 }, (_, i) => ({ fileId: 0, offset: i * 10, length: 1 }))
    assert.throws(() => encodeControl(withRanges(many)), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    const limited = decodeControl(encodeControl(withRanges(many.slice(0, 10))), { limits: { maxDurableRanges: 10 } })
    assert.equal((limited as TargetStateMessage).seeding?.durableRanges.length, 10)
    assert.throws(() => decodeControl(encodeControl(withRanges(many.slice(0, 11))), { limits: { maxDurableRanges: 10 } }), { code: 'ERR_REPLICATION_LIMIT_EXCEEDED' })
  })

  it('mergeRanges and durableRanges build canonical, bounded lists', () => {
    const merged = mergeRanges([
      { fileId: 1, offset: 100, length: 50 },
      { fileId: 0, offset: 10, length: 10 },
      { fileId: 0, offset: 0, length: 10 },
      { fileId: 1, offset: 120, length: 100 },
      { fileId: 0, offset: 30, length: 0 },
      { fileId: 0, offset: 25, length: 5 }
    ])
    assert.deepEqual(merged, [
      { fileId: 0, offset: 0, length: 20 },
      { fileId: 0, offset: 25, length: 5 },
      { fileId: 1, offset: 100, length: 120 }
    ])
    assert.deepEqual(durableRanges(merged, 2), [{ fileId: 0, offset: 0, length: 20 }, { fileId: 1, offset: 100, length: 120 }])
    assert.throws(() => mergeRanges([{ fileId: 0, offset: -1, length: 1 }]), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
  })

  it('hash requests and responses: bounds, split into frames with a last marker', () => {
    assert.throws(() => encodeControl({ type: 'hashRequest', requestId: 1, fileId: 0, offset: 0, length: 0, blockSize: 4096 }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ type: 'hashRequest', requestId: 1, fileId: 0, offset: MAX, length: 1, blockSize: 4096 }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ type: 'hashResponse', requestId: 1, fileId: 0, offset: 0, blockSize: 4096, hashes: [new Uint8Array(15)], last: true }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ type: 'hashResponse', requestId: 1, fileId: 0, offset: 0, blockSize: 4096, hashes: [], last: false }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    rejects(frame(ControlType.HashRequest, [0, 0, 0, 1, 0, 0, 0, 0, ...u64(0n), ...u64(0n), 0, 0, 16, 0]), 'ERR_REPLICATION_MALFORMED_FRAME')
    rejects(frame(ControlType.HashRequest, [0, 0, 0, 1, 0, 0, 0, 0, ...u64(0n), ...u64(1n), 0, 0, 0, 0]), 'ERR_REPLICATION_LIMIT_EXCEEDED')
    // a count that disagrees with the body length
    rejects(frame(ControlType.HashResponse, [0, 0, 0, 1, 0, 0, 0, 0, ...u64(0n), 0, 0, 16, 0, 1, 0, 0, 0, 2, ...hash(1)]), 'ERR_REPLICATION_MALFORMED_FRAME')
    const hashes = Array.from({ length: 10 }, (_, i) => hash(i))
    const parts = [...hashResponses({ requestId: 9, fileId: 2, offset: 1000, blockSize: 100 }, hashes, 4)]
    assert.deepEqual(parts.map(p => [p.offset, p.hashes.length, p.last]), [[1000, 4, false], [1400, 4, false], [1800, 2, true]])
    for (const p of parts) assert.deepEqual(normalize(decodeControl(encodeControl(p))), normalize(p))
    const empty = [...hashResponses({ requestId: 9, fileId: 2, offset: 0, blockSize: 100 }, [])]
    assert.deepEqual(empty.map(p => [p.hashes.length, p.last]), [[0, true]])
  })

  it('maps errors to nack codes in one place, and nacks back to typed errors', () => {
    assert.equal(nackCodeFor(new DeltaChecksumMismatchError('x')), NackCode.ChecksumMismatch)
    assert.equal(nackCodeFor(new DeltaOverlapError('x')), NackCode.ProtocolError)
    assert.equal(nackCodeFor(new VmeshError('ERR_REPLICA_DISK_FULL', 'x')), NackCode.DiskFull)
    assert.equal(nackCodeFor(Object.assign(new Error('x'), { code: 'ENOSPC' })), NackCode.DiskFull)
    assert.equal(nackCodeFor(new VmeshError('ERR_REPLICA_BASE_MISMATCH', 'x')), NackCode.BaseMismatch)
    assert.equal(nackCodeFor(new VmeshError('ERR_REPLICA_BUSY', 'x')), NackCode.Busy)
    assert.equal(nackCodeFor(new Error('boom')), NackCode.Internal)
    assert.equal(nackCodeFor(undefined), NackCode.Internal)
    let err: Error & { code?: string, retryAfterMs?: number, nackCode?: number } = errorFromRejection({ type: 'nack', generation: 4, code: NackCode.DiskFull, message: 'full', retryAfterMs: 500 })
    assert.equal(err.name, 'ReplicationNackedError')
    assert.equal(err.code, 'ERR_REPLICATION_NACKED')
    assert.equal(err.nackCode, NackCode.DiskFull)
    assert.equal(err.retryAfterMs, 500)
    err = errorFromRejection({ type: 'refuse', generation: 0, code: NackCode.Busy, message: '' })
    assert.equal(err.name, 'ReplicationRefusedError')
    assert.equal(err.code, 'ERR_REPLICATION_REFUSED')
    assert.equal(isPeerProtocolError(err), false)
    assert.equal(isPeerProtocolError(new DeltaOverlapError('x')), true)
  })

  it('encoder refuses invalid numbers with ReplicationEncodeError, not a peer error', () => {
    const bad: ControlMessage[] = [
      { type: 'ping', nonce: -1, timestampMs: 0 },
      { type: 'ping', nonce: 2 ** 32, timestampMs: 0 },
      { type: 'ping', nonce: 1, timestampMs: 1.5 },
      { type: 'ack', generation: MAX + 1, durable: true, appliedAtMs: 0 },
      { type: 'nack', generation: 1, code: 99 as NackCode, message: '' },
      { type: 'nack', generation: 1, code: NackCode.Busy, message: 'x'.repeat(1025) },
      { type: 'hello', protocolVersion: 70000, vm: 'a', sourceNode: 'b', files: [{ fileId: 0, path: 'p', kind: FileKind.Disk, size: 0, blockSize: 1 }], seedMode: SeedMode.Full }
    ]
    for (const m of bad) {
      assert.throws(() => encodeControl(m), (err: VmeshError) => err.name === 'ReplicationEncodeError' && !isPeerProtocolError(err))
    }
  })
})

describe('replication control codec: haveQuery / haveAnswer (1.2.0)', () => {
  it('travel only where 1.2.0 was negotiated: a 1.1.0 or 1.0.0 target does not know the frame types', () => {
    assert.equal(streamCarriesHaveQuery(REPLICATION_PROTOCOL), true)
    assert.equal(streamCarriesHaveQuery(REPLICATION_PROTOCOL_1_1), false)
    assert.equal(streamCarriesHaveQuery(REPLICATION_PROTOCOL_1_0), false)
    assert.equal(streamCarriesHaveQuery(undefined), true)
  })

  const q = (blocks: Array<{ offset: number, length: number }>): Uint8Array =>
    encodeControl({ type: 'haveQuery', queryId: 3, generation: 7, fileId: 1, blocks: blocks.map((b, i) => ({ ...b, hash: hash(i) })) })

  it('round-trips with its bitmap, and refuses what the target could be misled by', () => {
    const ans = encodeControl({ type: 'haveAnswer', queryId: 3, held: [true, false, false, false, false, false, false, false, false, true] })
    assert.deepEqual([...ans.subarray(5)], [0, 0, 0, 3, 0, 0, 0, 10, 0x80, 0x40])
    // a bit past the last flag: two encodings of one answer would exist
    const stray = ans.slice(); stray[stray.length - 1] = 0x41
    rejects(stray, 'ERR_REPLICATION_MALFORMED_FRAME')
    // the bitmap must be exactly ceil(count / 8) bytes
    rejects(frame(ControlType.HaveAnswer, [0, 0, 0, 1, 0, 0, 0, 9, 0]), 'ERR_REPLICATION_MALFORMED_FRAME')
    rejects(frame(ControlType.HaveAnswer, [0, 0, 0, 1, 0, 0, 0, 0, 0]), 'ERR_REPLICATION_MALFORMED_FRAME')
    rejects(frame(ControlType.HaveAnswer, [0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff, 0]), 'ERR_REPLICATION_LIMIT_EXCEEDED')
    // blocks: ascending, non-overlapping, 1..MAX_BLOCK_LENGTH, within 2^53
    assert.doesNotThrow(() => decodeControl(q([{ offset: 0, length: 10 }, { offset: 10, length: 10 }])))
    assert.throws(() => q([{ offset: 10, length: 10 }, { offset: 5, length: 10 }]), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    const overlap = q([{ offset: 0, length: 10 }, { offset: 20, length: 10 }])
    new DataView(overlap.buffer).setBigUint64(5 + 20 + 28, 5n)
    rejects(overlap, 'ERR_REPLICATION_MALFORMED_FRAME')
    const zeroLen = q([{ offset: 0, length: 10 }])
    new DataView(zeroLen.buffer).setUint32(5 + 20 + 8, 0)
    rejects(zeroLen, 'ERR_REPLICATION_LIMIT_EXCEEDED')
    const past = q([{ offset: MAX - 10, length: 10 }])
    new DataView(past.buffer).setUint32(5 + 20 + 8, 11)
    rejects(past, 'ERR_REPLICATION_LIMIT_EXCEEDED')
    rejects(frame(ControlType.HaveQuery, [...new Array(16).fill(0), 0, 0, 0, 0, ...new Array(28).fill(0)]), 'ERR_REPLICATION_MALFORMED_FRAME')
    // the header alone refuses more blocks than the limit
    assert.throws(() => checkControlHeader(ControlType.HaveQuery, maxBodyBytes(ControlType.HaveQuery, DEFAULT_CONTROL_LIMITS) + 1, DEFAULT_CONTROL_LIMITS), { code: 'ERR_REPLICATION_FRAME_TOO_LARGE' })
    assert.throws(() => encodeControl({ type: 'haveQuery', queryId: 1, generation: 1, fileId: 1, blocks: [] }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
    assert.throws(() => encodeControl({ type: 'haveAnswer', queryId: 1, held: new Array(DEFAULT_CONTROL_LIMITS.maxHaveBlocks + 1).fill(false) }), { code: 'ERR_REPLICATION_ENCODE_INVALID' })
  })
})
