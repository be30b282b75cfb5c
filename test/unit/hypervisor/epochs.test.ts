import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { EPOCH_FILE, EpochStore } from '../../../daemon/hypervisor/epochs.ts'
import { tempDir } from '../../helpers/tmp.ts'

describe('hypervisor/epochs', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => { ({ dir, cleanup } = await tempDir('vmesh-epochs-')) })
  afterEach(async () => { await cleanup() })

  it('admits equal or higher epochs, refuses lower ones with StaleEpochError', async () => {
    const s = new EpochStore(dir)
    assert.equal(await s.highest('web01'), 0)
    await s.admit('web01', 3)
    await s.admit('web01', 3)
    await s.admit('web01', 5)
    await assert.rejects(s.admit('web01', 4), (err: Error & { code?: string, highest?: number }) => err.name === 'StaleEpochError' && err.code === 'ERR_STALE_EPOCH' && err.highest === 5)
    await s.admit('db01', 1)
    assert.equal(await s.highest('web01'), 5)
    assert.equal(await s.highest('db01'), 1)
  })

  it('persists across instances (a daemon restart)', async () => {
    await new EpochStore(dir).admit('web01', 9)
    const again = new EpochStore(dir)
    assert.equal(await again.highest('web01'), 9)
    await assert.rejects(again.admit('web01', 8), { name: 'StaleEpochError' })
    const doc = JSON.parse(await readFile(join(dir, EPOCH_FILE), 'utf8'))
    assert.deepEqual(doc, { version: 1, epochs: { web01: 9 } })
  })

  it('observe() records a higher epoch learned elsewhere and ignores lower ones', async () => {
    const s = new EpochStore(dir)
    await s.observe('web01', 4)
    await s.observe('web01', 2)
    assert.equal(await s.highest('web01'), 4)
    await assert.rejects(s.admit('web01', 3), { name: 'StaleEpochError' })
  })

  it('concurrent admits are applied in call order and keep the highest', async () => {
    const s = new EpochStore(dir)
    const results = await Promise.allSettled([1, 7, 3, 7, 5].map(async e => { await s.admit('vm', e) }))
    assert.deepEqual(results.map(r => r.status), ['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'rejected'])
    assert.equal(await s.highest('vm'), 7)
    assert.equal(await new EpochStore(dir).highest('vm'), 7)
  })

  it('a damaged state file is an error, never an empty history', async () => {
    await writeFile(join(dir, EPOCH_FILE), '{"epochs": {"web01": ')
    await assert.rejects(new EpochStore(dir).admit('web01', 1), { name: 'HypervisorStateError', code: 'ERR_HYPERVISOR_STATE' })
    await writeFile(join(dir, EPOCH_FILE), '{"epochs": {"web01": -1}}')
    await assert.rejects(new EpochStore(dir).highest('web01'), { code: 'ERR_HYPERVISOR_STATE' })
  })

  it('refuses a negative or fractional epoch', async () => {
    await assert.rejects(new EpochStore(dir).admit('web01', -1), { name: 'StaleEpochError' })
    await assert.rejects(new EpochStore(dir).admit('web01', 1.5), { name: 'StaleEpochError' })
  })
})
