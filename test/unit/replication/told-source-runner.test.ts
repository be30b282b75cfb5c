import assert from 'node:assert/strict'
import { changeSourceKind } from '../../../daemon/replication/told-source-runner.ts'

describe('replication/changeSourceKind', () => {
  it('auto: bitmaps with a qmp socket or the qemu driver, else the hash scan; explicit choices win', () => {
    assert.equal(changeSourceKind({ changeSource: 'auto' }, 'none'), 'hash-scan')
    assert.equal(changeSourceKind({ changeSource: 'auto' }, 'hyperv'), 'hash-scan')
    assert.equal(changeSourceKind({ changeSource: 'auto' }, 'qemu'), 'qemu-bitmap')
    assert.equal(changeSourceKind({ changeSource: 'auto', qmpPath: '/run/a.qmp' }, 'command'), 'qemu-bitmap')
    assert.equal(changeSourceKind({ changeSource: 'scan' }, 'qemu'), 'hash-scan')
    assert.equal(changeSourceKind({ changeSource: 'qemu-bitmap', qmpPath: '/run/a.qmp' }, 'none'), 'qemu-bitmap')
  })
})
