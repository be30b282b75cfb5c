import assert from 'node:assert/strict'
import { decodeVmSpecs, encodeVmSpecs, VMSPEC_MAX_MESSAGE_BYTES, type VmSpecsMessage } from '../../../protocol/vmspec/index.ts'

describe('protocol/vmspec codec', () => {
  const msg: VmSpecsMessage = { v: 1, want: true, specs: [{ name: 'web01', home: 'hv-a', replicateTo: ['hv-b', 'hv-c'], failover: 'auto', startOrder: 0, priority: 5 }] }

  it('decode(encode(m)) is m', () => {
    assert.deepEqual(decodeVmSpecs(encodeVmSpecs(msg)), msg)
    const noWant: VmSpecsMessage = { v: 1, specs: [] }
    assert.deepEqual(decodeVmSpecs(encodeVmSpecs(noWant)), noWant)
  })

  it('refuses hostile bytes with VmSpecDecodeError, never a partial spec', () => {
    const bad = (doc: unknown): void => { assert.throws(() => decodeVmSpecs(new TextEncoder().encode(JSON.stringify(doc))), { name: 'VmSpecDecodeError', code: 'ERR_VMSPEC_DECODE' }) }
    bad({ v: 3, specs: [] }) // v2 (0.4) added fields; an unknown version is refused
    bad({ v: 1, specs: [{ ...msg.specs[0], name: '../etc' }] })
    bad({ v: 1, specs: [{ ...msg.specs[0], failover: 'sometimes' }] })
    bad({ v: 1, specs: [{ ...msg.specs[0], extra: 1 }] })
    bad({ v: 1, specs: [{ ...msg.specs[0], priority: 1.5 }] })
    bad({ v: 1, specs: Array.from({ length: 1001 }, (_, i) => ({ ...msg.specs[0], name: `vm${i}` })) })
    assert.throws(() => decodeVmSpecs(new Uint8Array([0xff, 0xfe])), { name: 'VmSpecDecodeError' })
    assert.throws(() => decodeVmSpecs(new Uint8Array(VMSPEC_MAX_MESSAGE_BYTES + 1)), { name: 'VmSpecDecodeError' })
  })
})
