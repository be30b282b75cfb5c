import { strict as assert } from 'node:assert'
import { createServer } from 'node:net'
import { freePort, ephemeralRange } from '../../../daemon/cluster/free-port.ts'

describe('cluster: free ports for daemons started later', () => {
  it('come from below the ephemeral range, so no outgoing connection can take one before the daemon binds it', async () => {
    const { low } = ephemeralRange()
    const ports = new Set<number>()
    for (let i = 0; i < 50; i++) {
      const p = await freePort()
      assert.ok(p > 1024 && p < low, `port ${p} is not below the ephemeral range (starts at ${low})`)
      ports.add(p)
    }
    assert.equal(ports.size, 50, 'a port was handed out twice')
  })

  it('skips a port someone already listens on', async () => {
    const held = await freePort()
    const s = createServer()
    await new Promise<void>(resolve => s.listen(held, '127.0.0.1', resolve))
    try {
      for (let i = 0; i < 50; i++) assert.notEqual(await freePort(), held)
    } finally { await new Promise(resolve => s.close(resolve)) }
  })
})
