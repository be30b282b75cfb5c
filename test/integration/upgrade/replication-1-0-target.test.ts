/**
 * A current source and a target of an older release, which speaks only
 * `/vmesh/replication/1.0.0` (and refuses hello's retention flag bit) or only `1.1.0` (and does
 * not know the haveQuery frame type of 1.2.0): multistream-select settles on the old version, the
 * source's hello leaves out what it cannot carry, and the seed that follows sends every block as
 * data — no haveQuery. The old target is an in-process libp2p node with node `c`'s identity on
 * `c`'s address (its daemon never started), as in protocol-version.test.ts; it decodes the hello,
 * answers with an empty targetState and records the generation's frames.
 */
import '../../../common/polyfill.ts'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import type { Stream } from '@libp2p/interface'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { createMeshNode, type MeshNode } from '../../../daemon/mesh/node.ts'
import { loadIdentity } from '../../../config/identity.ts'
import { REPLICATION_PROTOCOL_1_0, REPLICATION_PROTOCOL_1_1, type HelloMessage, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { Channel, type StreamLike } from '../../../daemon/replication/channel.ts'

for (const version of [REPLICATION_PROTOCOL_1_0, REPLICATION_PROTOCOL_1_1]) {
  describe(`integration: a current source and a replication ${version.split('/').pop() as string} target`, function () {
    this.timeout(90_000)
    let c: LocalCluster | undefined
    let old: MeshNode | undefined

    after(async () => {
      await old?.libp2p.stop()
      await c?.destroy()
    })

    it(`negotiates ${version}, leaves out what it cannot carry, and seeds every block as data`, async () => {
      c = await LocalCluster.create({ nodes: [{ name: 'a' }, { name: 'c' }] })
      const cluster = c
      const disk = join(c.dir, 'app.img')
      await writeFile(disk, Buffer.alloc(1024 * 1024, 3))
      await c.writeConfig('a', { vms: [{ name: 'app', disks: [disk], replicateTo: ['c'], scanInterval: 300, recoveryPoints: { count: 2, keepAllWithin: 0, hourlyBeyond: false } }] })
      const id = await loadIdentity(join(c.node('c').dir, 'identity.key'))
      old = await createMeshNode({ privateKey: id.privateKey, listen: [`/ip4/127.0.0.1/tcp/${c.node('c').port}`], allowedPeerIds: [c.node('a').peerId] })
      const hellos: Array<{ protocol: string | undefined, hello: HelloMessage }> = []
      const items: ReplicationItem[] = []
      await old.libp2p.handle(version, (stream: Stream) => {
        void (async () => {
          const ch = new Channel(stream as unknown as StreamLike)
          const item = await ch.next()
          if (item?.type === 'hello') {
            hellos.push({ protocol: (stream as unknown as { protocol?: string }).protocol, hello: item })
            await ch.sendItem({ type: 'targetState', vm: item.vm, appliedGeneration: 0, appliedConsistentGeneration: 0, seeding: null, diskFree: 1 << 30 })
            // the seed: recorded up to its end (never acked; the session is dropped after)
            for (let i = await ch.next(); i !== null; i = await ch.next()) {
              items.push(i)
              if (i.type === 'end') break
            }
          }
          await ch.close().catch(() => {})
        })().catch(() => {})
      })
      await old.libp2p.start()
      await c.start('a')
      await cluster.waitFor('a hello from a\'s sender', async () => hellos.length > 0 || undefined, 60_000, 100)
      const h = hellos[0]!
      assert.equal(h.protocol, version)
      assert.equal(h.hello.vm, 'app')
      assert.equal(h.hello.sourceNode, 'a')
      if (version === REPLICATION_PROTOCOL_1_0) assert.equal(h.hello.retention, undefined, 'no retention on a 1.0.0 stream')
      else assert.notEqual(h.hello.retention, undefined, 'retention on a 1.1.0 stream')
      await cluster.waitFor('the seed generation\'s end', async () => items.some(i => i.type === 'end') || undefined, 60_000, 100)
      assert.equal(items.some(i => i.type === 'haveQuery'), false, 'no haveQuery on an older stream')
      let raw = 0
      for (const i of items) if (i.type === 'blocks') for (const e of i.entries) raw += e.length
      assert.equal(raw, 1024 * 1024, 'every block travels as data')
      assert.equal(cluster.isRunning('a'), true)
    })
  })
}
