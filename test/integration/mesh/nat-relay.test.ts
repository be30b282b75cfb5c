/**
 * Two branch offices behind NAT replicate to each other through the DR node's circuit relay
 * (`mesh.relay`), in network namespaces behind iptables MASQUERADE routers that admit only
 * replies (test/helpers/natbed.ts). Neither branch can dial the other, nor can the DR node dial
 * a branch: every connection is one a branch started. Checked: the three-node mesh forms with
 * every view alive, the branches' connection to each other is relayed (status `path`), a VM on
 * branch A replicates byte for byte to branch B, and the relay refuses a stranger's
 * reservation. Whether DCUtR turned the relayed connection into a direct one is printed: with
 * TCP from Node.js it cannot through these routers (see README "Branches behind NAT").
 * Skips without root.
 */
import assert from 'node:assert/strict'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { Natbed, type NatHost } from '../../helpers/natbed.ts'
import { Netbed } from '../../helpers/netbed.ts'
import { vmsSection, waitInSync, readReplicaAtRest } from '../replication/helpers.ts'

const STRANGER = fileURLToPath(new URL('../../fixtures/mesh/stranger-dial.ts', import.meta.url))

describe('integration: branches behind NAT through a relay', function () {
  this.timeout(180_000)
  let bed: Natbed | undefined
  let c: LocalCluster | undefined

  afterEach(async function () {
    const failed = this.currentTest?.state === 'failed'
    if (c !== undefined) {
      if (failed) console.log(`      cluster kept: ${c.dir}`)
      await c.destroy({ keep: failed })
    }
    bed?.down()
    c = undefined
    bed = undefined
  })

  it('two NATed branches form the mesh and replicate to each other through the DR relay; a stranger gets no reservation', async function () {
    const why = Netbed.unavailable()
    if (why !== undefined) { console.log(`      (skipped: ${why})`); this.skip() }
    bed = new Natbed()
    bed.start()
    const b = bed
    const hosts: NatHost[] = ['dr', 'a', 'b']
    c = await LocalCluster.create({ nodes: hosts.map(h => ({ name: h, netns: { prefix: b.exec(h), ip: b.ip(h) } })) })
    const cluster = c
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    const disk = join(vmDir, 'app.img')
    await writeFile(disk, randomBytes(8 * 1024 * 1024))
    const dr = c.node('dr')
    for (const h of hosts) {
      const cfg = c.configFor(h, h === 'a' ? vmsSection([{ name: 'app', disks: [disk], replicateTo: ['b'] }]) : {})
      const mesh = cfg.mesh as { peers: Array<{ name: string, addrs: string[] }>, relay?: unknown }
      // only the DR node has an address anyone can dial; the branches are reached through it
      for (const p of mesh.peers) if (p.name !== 'dr') p.addrs = []
      mesh.relay = h === 'dr' ? { serve: true } : { via: ['dr'] }
      await writeFile(c.node(h).configPath, stringify(cfg))
    }
    await c.startAll()
    const allAlive = async (): Promise<boolean> => {
      for (const h of hosts) {
        const s = await cluster.status(h).catch(() => undefined)
        if (s === undefined || s.members.length !== 2 || !s.members.every(m => m.state === 'alive' && m.connected)) return false
      }
      return true
    }
    const formedIn = Date.now()
    await c.waitFor('every view alive', allAlive, 60_000, 200)
    console.log(`      mesh formed through NAT in ${Date.now() - formedIn} ms after start`)
    const aView = await c.status('a')
    const bOnA = aView.members.find(m => m.name === 'b')
    const drOnA = aView.members.find(m => m.name === 'dr')
    assert.equal(drOnA?.path, 'direct', JSON.stringify(drOnA))
    assert.ok(bOnA?.path === 'relayed' || bOnA?.path === 'direct', JSON.stringify(bOnA))

    await waitInSync(c, 'a', 'app', 'b', 90_000)
    const r = await readReplicaAtRest(c, 'b', 'app', disk)
    assert.ok(r.bytes.equals(await readFile(disk)), 'the replica on branch B equals the source on branch A')

    // the relay holds reservations for allowlisted peers only: a stranger behind branch A's
    // router dials the relay and asks for one
    const res = spawnSync('ip', ['netns', 'exec', b.ns('a'), process.execPath, '--import', 'tsx', STRANGER, `/ip4/${b.ip('dr')}/tcp/${dr.port}/p2p/${dr.peerId}`], { encoding: 'utf8', timeout: 60_000 })
    const verdict = JSON.parse(res.stdout.trim().split('\n').pop() ?? '{}') as { connected?: boolean, reserved?: boolean, error?: string }
    console.log(`      stranger at the relay: ${JSON.stringify(verdict)}`)
    // it reached the relay (not a network failure) and was turned away there
    assert.doesNotMatch(verdict.error ?? '', /ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|timed? ?out/i)
    assert.deepEqual({ connected: verdict.connected, reserved: verdict.reserved }, { connected: false, reserved: false }, `${res.stdout}\n${res.stderr}`)
    const final = (await c.status('a')).members.find(m => m.name === 'b')
    console.log(`      a↔b connection: ${final?.path} (DCUtR ${final?.path === 'direct' ? 'upgraded it to direct' : 'did not get through the two NATs'}); replica generation ${r.generation} identical`)
  })
})
