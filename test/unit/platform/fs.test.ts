import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { renameBackoffMs, renameDurable, renameDurableSync, syncDir, hostOs } from '../../../common/platform/index.ts'

function errno (code: string): NodeJS.ErrnoException { return Object.assign(new Error(code), { code }) }

/** Virtual time: sleep only advances `t`. */
function fakeClock (): { now: () => number, sleep: (ms: number) => Promise<void>, slept: number[] } {
  let t = 0
  const slept: number[] = []
  return { now: () => t, sleep: async (ms) => { slept.push(ms); t += ms }, slept }
}

describe('platform: durable rename', () => {
  it('win32: retries EPERM/EBUSY/EACCES with growing pauses until the rename goes through', async () => {
    const clock = fakeClock()
    const fails = ['EPERM', 'EBUSY', 'EACCES', 'EPERM']
    let calls = 0
    await renameDurable('a', 'b', { os: 'win32', clock, rename: async () => { calls++; const c = fails.shift(); if (c !== undefined) throw errno(c) } })
    assert.equal(calls, 5)
    assert.deepEqual(clock.slept, [10, 20, 40, 80])
  })

  it('win32: gives up with ERR_RENAME_BUSY once the budget is spent', async () => {
    const clock = fakeClock()
    let calls = 0
    await assert.rejects(renameDurable('a', 'b', { os: 'win32', clock, budgetMs: 1000, rename: async () => { calls++; throw errno('EBUSY') } }),
      (err: Error & { code?: string, cause?: { code?: string } }) => err.name === 'RenameBusyError' && err.code === 'ERR_RENAME_BUSY' && err.cause?.code === 'EBUSY')
    assert.ok(clock.now() <= 1000, `waited ${clock.now()} ms`)
    assert.ok(calls >= 5)
    assert.equal(renameBackoffMs(20), 250)
  })

  it('win32: a non-transient error (ENOENT) is final at once', async () => {
    const clock = fakeClock()
    await assert.rejects(renameDurable('a', 'b', { os: 'win32', clock, rename: async () => { throw errno('ENOENT') } }), { code: 'ENOENT' })
    assert.deepEqual(clock.slept, [])
  })

  it('linux: EPERM is a real error, not retried', async () => {
    const clock = fakeClock()
    let calls = 0
    await assert.rejects(renameDurable('a', 'b', { os: 'linux', clock, rename: async () => { calls++; throw errno('EPERM') } }), { code: 'EPERM' })
    assert.equal(calls, 1)
  })

  it('the synchronous form retries the same way without real sleeps', () => {
    const fails = ['EBUSY', 'EPERM']
    const slept: number[] = []
    renameDurableSync('a', 'b', { os: 'win32', rename: () => { const c = fails.shift(); if (c !== undefined) throw errno(c) }, sleepSync: (ms) => { slept.push(ms) } })
    assert.deepEqual(slept, [10, 20])
    assert.throws(() => { renameDurableSync('a', 'b', { os: 'linux', rename: () => { throw errno('EBUSY') }, sleepSync: () => { throw new Error('must not sleep') } }) }, { code: 'EBUSY' })
  })

  it('renames a real file on this host', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmesh-platform-'))
    try {
      await writeFile(join(dir, 'new.tmp'), 'new')
      await writeFile(join(dir, 'doc'), 'old')
      await renameDurable(join(dir, 'new.tmp'), join(dir, 'doc'), { os: hostOs })
      assert.equal(await readFile(join(dir, 'doc'), 'utf8'), 'new')
      await syncDir(dir, { os: hostOs })
    } finally { await rm(dir, { recursive: true, force: true }) }
  })
})

describe('platform: directory sync', () => {
  it('win32: EPERM/EISDIR from a folder fsync are ignored (NTFS journals metadata)', async () => {
    for (const code of ['EPERM', 'EISDIR', 'EACCES']) {
      await syncDir('C:\\data', { os: 'win32', syncFolder: async () => { throw errno(code) } })
    }
  })

  it('win32: other errors still propagate', async () => {
    await assert.rejects(syncDir('C:\\data', { os: 'win32', syncFolder: async () => { throw errno('EIO') } }), { code: 'EIO' })
  })

  it('linux: EPERM propagates (a replica must not claim durability it lacks)', async () => {
    await assert.rejects(syncDir('/data', { os: 'linux', syncFolder: async () => { throw errno('EPERM') } }), { code: 'EPERM' })
  })
})
