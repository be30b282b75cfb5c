import assert from 'node:assert/strict'
import { SeededRandom } from '../../../common/random.ts'
import { decodeStatusSummary, encodeStatusSummary, STATUS_SUMMARY_MAX_MESSAGE_BYTES, STATUS_SUMMARY_MAX_VMS, STATUS_SUMMARY_MAX_MEMBERS, type StatusSummaryMessage, type WireVmSummary } from '../../../protocol/status-summary/index.ts'

const vm: WireVmSummary = {
  name: 'web01', owner: 'hv-a', epoch: 3, runningHere: true, generation: 42, changeSource: 'hash-scan', rpoBoundMs: 3000,
  targets: [{ node: 'hv-b', state: 'seeding', ackedGeneration: 0, lagMs: null, rpoMs: null, bytesPending: 1 << 20, rateBytesPerSec: 5e6, seedProgress: 0.25 }],
  replica: null
}
const msg: StatusSummaryMessage = {
  v: 1, node: 'hv-a', role: 'host', seq: 7, atWallMs: 1_700_000_000_000, uptimeMs: 81234,
  members: [{ name: 'hv-b', state: 'alive', connected: true, sinceMs: 4000 }, { name: 'w', state: 'dead', connected: false, sinceMs: 0 }],
  vms: [vm, { ...vm, name: 'db01', owner: null, runningHere: false, changeSource: null, rpoBoundMs: null, targets: [], replica: { from: 'hv-c', appliedGeneration: 9, consistentGeneration: null, seeding: false } }]
}

const enc = (doc: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(doc))

describe('protocol/status-summary codec', () => {
  it('decode(encode(m)) is m', () => {
    assert.deepEqual(decodeStatusSummary(encodeStatusSummary(msg)), msg)
    const want = { ...msg, want: true, members: [], vms: [] }
    assert.deepEqual(decodeStatusSummary(encodeStatusSummary(want)), want)
  })

  it('refuses hostile bytes with StatusSummaryDecodeError, never a partial summary', () => {
    const bad = (doc: unknown): void => { assert.throws(() => decodeStatusSummary(enc(doc)), { name: 'StatusSummaryDecodeError', code: 'ERR_STATUS_SUMMARY_DECODE' }) }
    bad({ ...msg, v: 2 })
    bad({ ...msg, node: '../x' })
    bad({ ...msg, extra: 1 })
    bad({ ...msg, seq: -1 })
    bad({ ...msg, seq: 1.5 })
    bad({ ...msg, role: 'king' })
    bad({ ...msg, members: [{ ...msg.members[0], state: 'zombie' }] })
    bad({ ...msg, vms: [{ ...vm, targets: [{ ...vm.targets[0], seedProgress: 2 }] }] })
    bad({ ...msg, vms: [{ ...vm, changeSource: 'magic' }] })
    bad({ ...msg, vms: [{ ...vm, replica: { from: 'hv-c' } }] })
    bad({ ...msg, members: Array.from({ length: STATUS_SUMMARY_MAX_MEMBERS + 1 }, (_, i) => ({ ...msg.members[0], name: `n${i}` })) })
    bad(null)
    bad([])
    assert.throws(() => decodeStatusSummary(new Uint8Array([0xff, 0xfe])), { name: 'StatusSummaryDecodeError' })
    assert.throws(() => decodeStatusSummary(new Uint8Array(STATUS_SUMMARY_MAX_MESSAGE_BYTES + 1)), { name: 'StatusSummaryDecodeError' })
  })

  it('rpoTargetMs: optional on a VM (a summary without it still decodes), bounded like every duration', () => {
    const withTarget = { ...msg, vms: [{ ...vm, rpoTargetMs: 30_000 }, msg.vms[1] as WireVmSummary] }
    assert.deepEqual(decodeStatusSummary(encodeStatusSummary(withTarget)), withTarget)
    assert.equal(decodeStatusSummary(encodeStatusSummary(msg)).vms[0]?.rpoTargetMs, undefined)
    assert.throws(() => decodeStatusSummary(enc({ ...msg, vms: [{ ...vm, rpoTargetMs: -1 }] })), { name: 'StatusSummaryDecodeError' })
    assert.throws(() => decodeStatusSummary(enc({ ...msg, vms: [{ ...vm, rpoTargetMs: '60s' }] })), { name: 'StatusSummaryDecodeError' })
  })

  it('the encoder trims lists to the bounds the decoder enforces', () => {
    const many = { ...msg, vms: Array.from({ length: STATUS_SUMMARY_MAX_VMS + 10 }, (_, i) => ({ ...vm, name: `vm${i}`, targets: [] })) }
    const out = decodeStatusSummary(encodeStatusSummary(many))
    assert.equal(out.vms.length, STATUS_SUMMARY_MAX_VMS)
  })

  it('fuzz: mutated and truncated frames decode or fail with the typed error, never anything else', () => {
    const rng = new SeededRandom(13)
    const good = encodeStatusSummary(msg)
    let decoded = 0
    for (let i = 0; i < 3000; i++) {
      const b = Uint8Array.from(good.subarray(0, rng.int(good.length + 1)))
      const flips = rng.int(4)
      for (let j = 0; j < flips && b.length > 0; j++) b[rng.int(b.length)] = rng.int(256)
      try { decodeStatusSummary(b); decoded++ } catch (err) {
        assert.equal((err as Error).name, 'StatusSummaryDecodeError', String(err))
      }
    }
    assert.ok(decoded < 3000)
  })
})
