import assert from 'node:assert/strict'
import { truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { BufferReader, FileReader, MAX_READ_LENGTH } from '../../../storage/formats/reader.ts'
import { tempDir } from '../../helpers/tmp.ts'

describe('byte readers', () => {
  it('BufferReader returns views and rejects spans outside the input', async () => {
    const r = new BufferReader(Uint8Array.from([1, 2, 3, 4, 5]))
    assert.deepEqual(Array.from(await r.read(1, 3)), [2, 3, 4])
    assert.deepEqual(Array.from(await r.read(5, 0)), [])
    for (const [off, len] of [[4, 2], [-1, 1], [0, -1], [0.5, 1], [Number.MAX_SAFE_INTEGER, 1], [0, MAX_READ_LENGTH + 1]]) {
      await assert.rejects(r.read(off as number, len as number), { name: 'ReadOutOfRangeError', code: 'ERR_FORMAT_READ_OUT_OF_RANGE' })
    }
  })

  it('FileReader reads exactly, and reports a file that shrank under it', async () => {
    const { dir, cleanup } = await tempDir('vmesh-reader-')
    try {
      const p = join(dir, 'f.bin')
      await writeFile(p, Uint8Array.from({ length: 10000 }, (_, i) => i & 0xff))
      const r = await FileReader.open(p)
      try {
        assert.equal(r.size, 10000)
        assert.deepEqual(Array.from(await r.read(9998, 2)), [9998 & 0xff, 9999 & 0xff])
        await truncate(p, 5000)
        await assert.rejects(r.read(4000, 2000), { name: 'ReadOutOfRangeError' })
        await assert.rejects(r.read(9000, 2000), { name: 'ReadOutOfRangeError' })
      } finally {
        await r.close()
      }
    } finally {
      await cleanup()
    }
  })
})
