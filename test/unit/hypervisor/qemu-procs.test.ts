import assert from 'node:assert/strict'
import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { escapeQemuOpt, listQemuProcesses, parseQemuArgv, parseQemuOpts } from '../../../daemon/hypervisor/qemu-procs.ts'
import { tempDir } from '../../helpers/tmp.ts'

describe('hypervisor/qemu-procs', () => {
  it('parses QemuOpts with doubled commas and an implied first key', () => {
    assert.deepEqual([...parseQemuOpts('file=/a,,b.vhd,format=vpc,if=ide')], [['file', '/a,b.vhd'], ['format', 'vpc'], ['if', 'ide']])
    assert.deepEqual([...parseQemuOpts('web01')], [['', 'web01']])
    assert.equal(escapeQemuOpt('a,b'), 'a,,b')
    assert.equal(parseQemuOpts(`file=${escapeQemuOpt('/x,y,,z')}`).get('file'), '/x,y,,z')
  })

  it('reads name and disks from -name, -drive, -hda and -blockdev (JSON and dotted)', () => {
    assert.deepEqual(parseQemuArgv(['qemu-system-x86_64', '-name', 'guest=web01,debug-threads=on', '-drive', 'file=/v/a.vhdx,format=vhdx', '-hdb', '/v/b.img',
      '-blockdev', '{"driver":"qcow2","file":{"driver":"file","filename":"/v/c.qcow2"},"node-name":"d"}', '-blockdev', 'driver=file,filename=/v/d.raw,node-name=e', '-pidfile', '/r/web01.pid']), {
      name: 'web01', disks: ['/v/a.vhdx', '/v/b.img', '/v/c.qcow2', '/v/d.raw'], pidFile: '/r/web01.pid'
    })
    assert.deepEqual(parseQemuArgv(['qemu-system-x86_64', '--name', 'plain', '-drive']), { name: 'plain', disks: [] })
  })

  it('lists qemu processes from a /proc tree, skipping everything else', async () => {
    const { dir, cleanup } = await tempDir('vmesh-proc-')
    try {
      const proc = (pid: string, argv: string[]): Promise<void> => mkdir(join(dir, pid)).then(async () => { await writeFile(join(dir, pid, 'cmdline'), argv.join('\0') + '\0') })
      await proc('100', ['/usr/bin/qemu-system-x86_64', '-name', 'guest=web01', '-drive', 'file=/v/web01.vhdx,format=vhdx'])
      await proc('200', ['/usr/sbin/sshd', '-D'])
      await proc('300', ['qemu-system-x86_64', '-drive', 'file=rel/x.vhd,format=vpc'])
      await symlink('/srv/vms', join(dir, '300', 'cwd'))
      await mkdir(join(dir, 'self'))
      await mkdir(join(dir, '400')) // a process that vanished: no cmdline
      const list = (await listQemuProcesses(dir)).sort((a, b) => a.pid - b.pid)
      assert.deepEqual(list, [
        { pid: 100, name: 'web01', disks: ['/v/web01.vhdx'] },
        { pid: 300, disks: ['/srv/vms/rel/x.vhd'] }
      ])
      assert.deepEqual(await listQemuProcesses(join(dir, 'nope')), [])
    } finally { await cleanup() }
  })
})
