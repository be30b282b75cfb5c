import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { detectDiskFormat } from '../../../daemon/hypervisor/disk-format.ts'
import { tempDir } from '../../helpers/tmp.ts'

const hasQemuImg = spawnSync('qemu-img', ['--version']).status === 0

describe('hypervisor/disk-format', function () {
  this.timeout(20_000)
  let dir: string
  let cleanup: () => Promise<void>
  before(async () => { ({ dir, cleanup } = await tempDir('vmesh-fmt-')) })
  after(async () => { await cleanup() })

  it('reads the signature: vhdxfile at 0, conectix at the end (fixed VHD) or at 0 (dynamic), else raw', async () => {
    const fixed = Buffer.alloc(4096 + 512); fixed.write('conectix', 4096, 'latin1')
    const dyn = Buffer.alloc(2048); dyn.write('conectix', 0, 'latin1')
    const vhdx = Buffer.alloc(1024); vhdx.write('vhdxfile', 0, 'latin1')
    const raw = Buffer.alloc(4096, 0xab)
    const cases: Array<[string, Buffer, string]> = [['f.vhd', fixed, 'vpc'], ['d.vhd', dyn, 'vpc'], ['x.vhdx', vhdx, 'vhdx'], ['r.vhdx', raw, 'raw'], ['tiny', Buffer.from('abc'), 'raw']]
    for (const [name, buf, fmt] of cases) {
      await writeFile(join(dir, name), buf)
      assert.equal(await detectDiskFormat(join(dir, name)), fmt, name)
    }
  })

  it('agrees with qemu-img on files it made (fixed VHD, dynamic VHD, VHDX)', async function () {
    if (!hasQemuImg) { this.skip(); return }
    for (const [name, args, fmt] of [
      ['q-fixed.vhd', ['-f', 'vpc', '-o', 'subformat=fixed,force_size=on'], 'vpc'],
      ['q-dyn.vhd', ['-f', 'vpc', '-o', 'force_size=on'], 'vpc'],
      ['q.vhdx', ['-f', 'vhdx'], 'vhdx'],
      ['q.raw', ['-f', 'raw'], 'raw']
    ] as Array<[string, string[], string]>) {
      const r = spawnSync('qemu-img', ['create', '-q', ...args, join(dir, name), '8M'])
      assert.equal(r.status, 0, String(r.stderr))
      assert.equal(await detectDiskFormat(join(dir, name)), fmt, name)
    }
  })
})
