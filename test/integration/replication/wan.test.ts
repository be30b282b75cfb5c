/**
 * Replication over an emulated WAN link with no `limit` configured (network namespaces: 10 Mbit/s
 * tbf both ways, 25 ms each way through NFQUEUE, test/helpers/wan-link.ts):
 *  - a seed saturating the link causes no suspicion of the healthy peer and no session restart
 *    (the sender bounds its bytes in flight to ~2 BDP, so membership probes and libp2p's ping do
 *    not wait behind seconds of queued data), and the replica equals the source;
 *  - a change set several seconds long goes as chunks durable on ack: the target daemon killed
 *    in the middle and started again, the source goes on with the rest — the bytes on the wire
 *    stay within what was written plus the one chunk that was in flight.
 * Needs root, iptables, tc and nfq-delay (built from the test bed if missing); skips otherwise.
 */
import assert from 'node:assert/strict'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LocalCluster } from '../../../daemon/cluster/local-cluster.ts'
import { Netbed } from '../../helpers/netbed.ts'
import { WanLink, nfqDelayBinary } from '../../helpers/wan-link.ts'
import { requireQemu } from '../../helpers/qemu.ts'
import { vmsSection, randomFixedVhd, randomWrite, waitInSync, readReplicaAtRest, logOf, replicaOf, targetOf, vmOf } from './helpers.ts'

const MiB = 1024 * 1024

interface Line { at: number, msg: string, [k: string]: unknown }

async function logLines (c: LocalCluster, node: string): Promise<Line[]> {
  const out: Line[] = []
  for (const l of (await readFile(logOf(c, node), 'utf8')).split('\n')) {
    try { const j = JSON.parse(l) as Line & { time: string }; out.push({ ...j, at: Date.parse(j.time) }) } catch {}
  }
  return out
}

describe('replication over a WAN link with no limit (network namespaces)', function () {
  this.timeout(180_000)
  let bed: Netbed | undefined
  let link: WanLink | undefined
  let c: LocalCluster | undefined
  let failed = false

  afterEach(function () { if (this.currentTest?.state === 'failed') failed = true })

  before(function () {
    requireQemu(this)
    const why = Netbed.unavailable() ?? (nfqDelayBinary() instanceof Error ? (nfqDelayBinary() as Error).message : undefined)
    if (why !== undefined) {
      console.log(`      (skipped: ${why})`)
      this.skip()
    }
  })

  after(async function () {
    // a failure keeps the cluster folder (logs, data) as the evidence
    if (failed && c !== undefined) console.log(`      cluster kept: ${c.dir}`)
    await c?.destroy({ keep: process.env.KEEP === '1' || failed })
    link?.close()
    bed?.down()
  })

  it('a saturating seed: no suspicion, one session, the replica equals the source; then a chunked change set survives a target restart', async function () {
    bed = new Netbed()
    bed.start(2)
    link = new WanLink(bed)
    link.rate(1, '10mbit'); link.rate(2, '10mbit')
    link.delay(1, 2, 25)
    const b = bed
    c = await LocalCluster.create({ nodes: [{ name: 'a', netns: { prefix: b.exec(1), ip: b.ip(1) } }, { name: 'b', netns: { prefix: b.exec(2), ip: b.ip(2) } }], profile: 'wan', logLevel: 'debug' })
    const vmDir = join(c.dir, 'vms')
    await mkdir(vmDir)
    const disk = join(vmDir, 'wan1.vhd')
    const size = 16 * MiB
    await randomFixedVhd(disk, size)
    await c.writeConfig('a', vmsSection([{ name: 'wan1', disks: [disk], replicateTo: ['b'] }]))
    await c.startAll()

    // ~14 s of a saturated 10 Mbit/s link
    await waitInSync(c, 'a', 'wan1', 'b', 90_000)
    const a1 = await logLines(c, 'a')
    const opened = a1.filter(l => l.msg === 'replication session open')
    assert.equal(opened.length, 1, `sessions: ${JSON.stringify(opened)}`)
    const from = (opened[0] as Line).at
    const b1 = await logLines(c, 'b')
    const suspicions = [...a1, ...b1].filter(l => l.at >= from && (l.msg === 'member suspect' || l.msg === 'member dead' || l.msg === 'refuted a suspicion about this node'))
    // the probe round trips each way (acks from a to b travel behind the seed) and, on a
    // suspicion, the membership timeline of both nodes: a late ack means slow, none means lost
    for (const n of ['a', 'b']) console.log(`      ${n}'s probes of the other: ${JSON.stringify((await c.status(n)).members.map(m => m.probeRtt))}`)
    if (suspicions.length > 0) {
      const watched = /^(member |refuted|probe ack|local health|event loop lag|replication session|dial|connection)/
      for (const [n, lines] of [['a', a1], ['b', b1]] as const) {
        for (const l of lines.filter(l => watched.test(l.msg))) {
          const { at, msg, time: _t, level: _l, pid: _p, hostname: _h, name: _n, ...rest } = l as Line & Record<string, unknown>
          console.log(`        ${n} ${((at - from) / 1000).toFixed(3)} s ${msg} ${JSON.stringify(rest)}`)
        }
      }
    }
    assert.deepEqual(suspicions.map(l => l.msg), [], 'a healthy peer was suspected while the link was saturated')
    const pacing = targetOf(await c.status('a'), 'wan1', 'b')?.pacing
    console.log(`      seed of ${size / MiB} MiB: pacing at the end ${JSON.stringify(pacing)}`)
    const rest = await readReplicaAtRest(c, 'b', 'wan1', disk)
    assert.ok(Buffer.compare(rest.bytes, await readFile(disk)) === 0, 'replica differs from the source')

    // 10 MiB of 64 KiB-aligned writes: ~9 s of the link, so chunks of ~4 MiB
    const before = (await replicaOf(c, 'b', 'wan1'))?.bytesReceived ?? 0
    const gen0 = vmOf(await c.status('a'), 'wan1')?.generation ?? 0
    const written = 10 * MiB
    for (let off = 0; off < written; off += 64 * 1024) await randomWrite(disk, off * 2, 64 * 1024)
    // the first chunk is durable on the target: kill the target, start it again
    await c.waitFor('a first chunk acknowledged', async () => {
      const t = targetOf(await c?.status('a') as never, 'wan1', 'b')
      return t !== undefined && t.ackedGeneration > gen0 && t.bytesPending > 0 ? true : undefined
    }, 60_000, 100)
    const receivedAtKill = ((await replicaOf(c, 'b', 'wan1'))?.bytesReceived ?? 0) - before
    await c.kill('b')
    await c.start('b')
    await waitInSync(c, 'a', 'wan1', 'b', 90_000)
    const after = (await replicaOf(c, 'b', 'wan1'))?.bytesReceived ?? 0
    const a2 = await logLines(c, 'a')
    const chunks = a2.filter(l => l.msg === 'generation acknowledged' && l.at > from).length
    // bytesReceived restarts at 0 with the daemon: the wire after the restart plus before it
    const wire = receivedAtKill + after
    console.log(`      ${written / MiB} MiB written: ${chunks} generations acknowledged, ${(wire / MiB).toFixed(2)} MiB on the wire (${(receivedAtKill / MiB).toFixed(2)} before the kill)`)
    // the seed, then the change set in at least two chunks
    assert.ok(chunks >= 3, `expected the change set in chunks, ${chunks} generations acknowledged`)
    assert.ok(wire <= written + 4.5 * MiB, `resent more than the chunk in flight: ${wire} for ${written}`)
    const final = await readReplicaAtRest(c, 'b', 'wan1', disk)
    assert.ok(Buffer.compare(final.bytes, await readFile(disk)) === 0, 'replica differs from the source after the restart')
  })
})
