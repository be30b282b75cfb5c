/**
 * ensureNbdServer: QEMU holds one NBD server at a time. Ours already running (a daemon restart)
 * is fine; another tool's server elsewhere is a typed error that says what to do, instead of
 * every round failing to connect to a socket nobody listens on.
 */
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { ensureNbdServer } from '../../../daemon/hypervisor/qemu-bitmaps.ts'
import type { QmpReply } from '../../../daemon/hypervisor/qmp.ts'
import { tempDir } from '../../helpers/tmp.ts'

const running: QmpReply = { error: { class: 'GenericError', desc: 'NBD server already running' } }

describe('hypervisor/qemu: the NBD server vmesh reads dirty blocks through', () => {
  it('starts it, or accepts our own already running; refuses another tool\'s', async () => {
    const { dir } = await tempDir()
    const sock = join(dir, 'vm.nbd')
    const asked: unknown[] = []
    const started = await ensureNbdServer(async (cmd, args) => { asked.push([cmd, args]); return { return: {} } }, sock)
    assert.equal(started.started, true)
    assert.deepEqual(asked, [['nbd-server-start', { addr: { type: 'unix', data: { path: sock } } }]])

    await assert.rejects(ensureNbdServer(async () => running, sock), (err: Error & { code?: string }) =>
      err.name === 'QemuNbdServerBusyError' && err.code === 'ERR_QEMU_NBD_SERVER_BUSY' && err.message.includes(sock))

    const server = createServer()
    await new Promise<void>(resolve => server.listen(sock, resolve))
    try {
      const ours = await ensureNbdServer(async () => running, sock)
      assert.equal(ours.started, false)
      assert.equal(ours.error, undefined)
    } finally { server.close() }

    const other = await ensureNbdServer(async () => ({ error: { class: 'GenericError', desc: 'Permission denied' } }), sock)
    assert.equal(other.error?.desc, 'Permission denied', 'other errors are left to the caller')
  })
})
