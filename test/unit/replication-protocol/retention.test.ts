/**
 * hello's optional retention (1.1.0): round trip, absence (an older source's hello decodes as
 * before, with no retention), the bytes of a hello without it unchanged from 1.0.0, bounds, and
 * which negotiated protocol may carry it.
 */
import assert from 'node:assert/strict'
import { decodeControl, encodeControl } from '../../../protocol/replication/codec.ts'
import { REPLICATION_PROTOCOL, REPLICATION_PROTOCOL_1_0, REPLICATION_PROTOCOLS, helloCarriesRetention } from '../../../protocol/replication/ids.ts'
import { CONTROL_PROTOCOL_VERSION, FileKind, SeedMode, type HelloMessage } from '../../../protocol/replication/messages.ts'

const base: HelloMessage = {
  type: 'hello',
  protocolVersion: CONTROL_PROTOCOL_VERSION,
  vm: 'web01',
  sourceNode: 'hv-a',
  files: [{ fileId: 0, path: '/vms/web01.img', kind: FileKind.Disk, size: 1 << 20, blockSize: 65536 }],
  seedMode: SeedMode.Full
}
/** hello flags byte: after type u8, bodyLength u32, protocolVersion u16 */
const FLAGS_AT = 5 + 2

describe('replication hello: retention (1.1.0)', () => {
  it('round-trips, with and without an epoch', () => {
    for (const epoch of [undefined, 0, 7]) {
      const msg: HelloMessage = { ...base, ...(epoch !== undefined ? { epoch } : {}), retention: { count: 3, keepAllWithinMs: 0, hourlyBeyond: false } }
      const bytes = encodeControl(msg)
      assert.deepEqual(decodeControl(bytes), msg)
      assert.deepEqual(encodeControl(decodeControl(bytes)), bytes)
    }
  })

  it('absent: an older source\'s hello decodes without retention, and its bytes are what 1.0.0 sent', () => {
    const bytes = encodeControl(base)
    assert.equal(bytes[FLAGS_AT], 0, 'no flag bit set')
    const back = decodeControl(bytes) as HelloMessage
    assert.equal(back.retention, undefined)
    assert.equal('retention' in back, false)
    // with retention: the same bytes plus 13 after sourceNode, and flag bit 1
    const withR = encodeControl({ ...base, retention: { count: 24, keepAllWithinMs: 3_600_000, hourlyBeyond: true } })
    assert.equal(withR.byteLength, bytes.byteLength + 13)
    assert.equal(withR[FLAGS_AT], 2)
    const afterNames = FLAGS_AT + 1 + 1 + 2 + 5 + 2 + 4 // flags, seedMode, 'web01', 'hv-a'
    assert.deepEqual(Buffer.from(withR.subarray(afterNames, afterNames + 13)).toString('hex'), '00000018' + '000000000036ee80' + '01')
    const stripped = Buffer.concat([withR.subarray(5, afterNames), withR.subarray(afterNames + 13)])
    stripped[FLAGS_AT - 5] = 0
    assert.deepEqual(stripped, Buffer.from(bytes.subarray(5)))
  })

  it('refuses a count above the bound and unknown retention flag bits, on both sides', () => {
    assert.throws(() => encodeControl({ ...base, retention: { count: 10_001, keepAllWithinMs: 0, hourlyBeyond: false } }), { name: 'ReplicationEncodeError' })
    assert.throws(() => encodeControl({ ...base, retention: { count: -1, keepAllWithinMs: 0, hourlyBeyond: false } }), { name: 'ReplicationEncodeError' })
    const ok = encodeControl({ ...base, retention: { count: 5, keepAllWithinMs: 0, hourlyBeyond: true } })
    const afterNames = FLAGS_AT + 1 + 1 + 2 + 5 + 2 + 4
    const big = ok.slice(); new DataView(big.buffer).setUint32(afterNames, 10_001)
    assert.throws(() => decodeControl(big), { name: 'ReplicationLimitExceededError' })
    const badFlag = ok.slice(); badFlag[afterNames + 12] = 2
    assert.throws(() => decodeControl(badFlag), { name: 'ReplicationMalformedFrameError' })
    const truncated = ok.slice(0, afterNames + 5)
    new DataView(truncated.buffer).setUint32(1, truncated.byteLength - 5)
    assert.throws(() => decodeControl(truncated), (err: Error) => /Malformed|Truncated/.test(err.name))
  })

  it('travels only where 1.1.0 or newer was negotiated: a 1.0.0 target would refuse flag bit 1', () => {
    assert.deepEqual(REPLICATION_PROTOCOLS, ['/vmesh/replication/1.2.0', '/vmesh/replication/1.1.0', '/vmesh/replication/1.0.0'])
    assert.equal(helloCarriesRetention(REPLICATION_PROTOCOL), true)
    assert.equal(helloCarriesRetention(REPLICATION_PROTOCOL_1_0), false)
    assert.equal(helloCarriesRetention(undefined), true)
  })
})
