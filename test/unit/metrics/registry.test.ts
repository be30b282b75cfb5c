import assert from 'node:assert/strict'
import { register as globalRegistry } from 'prom-client'
import { createMetrics } from '../../../daemon/metrics/registry.ts'
import { levelMemoryBytes, openBinaryLevel } from '../../../storage/manifest/db.ts'
import { tempDir } from '../../helpers/tmp.ts'

/** The value of one series in a text exposition, or undefined when absent. */
function sample (text: string, name: string, labels: Record<string, string>): string | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line)
    if (m === null || m[1] !== name) continue
    const have = (m[3] ?? '').split(/,(?=[a-zA-Z_]+=")/).filter(s => s !== '')
    if (want.length === have.length && want.every(w => have.includes(w))) return m[4]
  }
  return undefined
}

describe('metrics registry', () => {
  it('exposes the replication series after updates', async () => {
    const m = createMetrics({ defaultMetrics: false })
    m.replication.setAckedGeneration('web01', 'hv-b', 42)
    m.replication.setLag('web01', 'hv-b', 0.18)
    m.replication.setRpo('web01', 'hv-b', 10.25)
    m.replication.setPendingBytes('web01', 'hv-b', 1048576)
    m.replication.addSentBytes('web01', 'hv-b', 1000)
    m.replication.addSentBytes('web01', 'hv-b', 24)
    m.replication.addSentBytes('web01', 'hv-b', -5) // ignored, never throws
    m.replication.setRate('web01', 'hv-b', 12_500_000)
    m.replication.setState('web01', 'hv-b', 'seeding')
    m.replication.setState('web01', 'hv-b', 'in-sync')
    const text = await m.text()
    const l = { vm: 'web01', target: 'hv-b' }
    assert.equal(sample(text, 'vmesh_replication_acked_generation', l), '42')
    assert.equal(sample(text, 'vmesh_replication_lag_seconds', l), '0.18')
    assert.equal(sample(text, 'vmesh_replication_rpo_seconds', l), '10.25')
    assert.equal(sample(text, 'vmesh_replication_pending_bytes', l), '1048576')
    assert.equal(sample(text, 'vmesh_replication_sent_bytes_total', l), '1024')
    assert.equal(sample(text, 'vmesh_replication_rate_bytes_per_second', l), '12500000')
    assert.equal(sample(text, 'vmesh_replication_state', { ...l, state: 'in-sync' }), '1')
    for (const s of ['seeding', 'behind', 'disconnected', 'error']) assert.equal(sample(text, 'vmesh_replication_state', { ...l, state: s }), '0')
    assert.match(text, /# TYPE vmesh_replication_sent_bytes_total counter/)
    assert.match(text, /# TYPE vmesh_replication_lag_seconds gauge/)
  })

  it('reports each watched LevelDB\'s memory at scrape time, until unwatched; a closed one is left out', async () => {
    const m = createMetrics({ defaultMetrics: false })
    let source: number | undefined = 1000
    const unwatch = m.storage.watchDb('source', () => source)
    m.storage.watchDb('ownership', () => 2048)
    let text = await m.text()
    assert.equal(sample(text, 'vmesh_leveldb_memory_bytes', { db: 'source' }), '1000')
    assert.equal(sample(text, 'vmesh_leveldb_memory_bytes', { db: 'ownership' }), '2048')
    source = 5000
    assert.equal(sample(await m.text(), 'vmesh_leveldb_memory_bytes', { db: 'source' }), '5000')
    source = undefined
    assert.equal(sample(await m.text(), 'vmesh_leveldb_memory_bytes', { db: 'source' }), undefined)
    source = 7
    unwatch()
    text = await m.text()
    assert.equal(sample(text, 'vmesh_leveldb_memory_bytes', { db: 'source' }), undefined)
    assert.equal(sample(text, 'vmesh_leveldb_memory_bytes', { db: 'ownership' }), '2048')
    // V8's own malloc()ed memory, now and its peak
    const peak = Number(sample(text, 'vmesh_v8_malloced_bytes', { at: 'peak' }))
    const now = Number(sample(text, 'vmesh_v8_malloced_bytes', { at: 'now' }))
    assert.ok(peak > 0 && now > 0, `${peak} ${now}`)
  })

  it('levelMemoryBytes: LevelDB\'s own figure for an open database, undefined once closed', async () => {
    const { dir, cleanup } = await tempDir()
    try {
      const db = await openBinaryLevel(dir)
      await db.put(new Uint8Array([1]), new Uint8Array(1000))
      const v = levelMemoryBytes(db)
      assert.ok(v !== undefined && v > 1000, String(v))
      await db.close()
      assert.equal(levelMemoryBytes(db), undefined)
      assert.equal(levelMemoryBytes({}), undefined)
    } finally { await cleanup() }
  })

  it('exposes replica, member and bandwidth series; Infinity is +Inf', async () => {
    const m = createMetrics({ defaultMetrics: false })
    m.replica.setAppliedGeneration('web01', 'hv-a', 41)
    m.members.setState('hv-b', 'alive')
    m.members.setState('hv-c', 'alive')
    m.members.setState('hv-c', 'suspect')
    m.bandwidth.setLimit(Infinity)
    m.bandwidth.setPeerLimit('hv-b', 1_250_000)
    let text = await m.text()
    assert.equal(sample(text, 'vmesh_replica_applied_generation', { vm: 'web01', source: 'hv-a' }), '41')
    assert.equal(sample(text, 'vmesh_member_state', { peer: 'hv-b', state: 'alive' }), '1')
    assert.equal(sample(text, 'vmesh_member_state', { peer: 'hv-c', state: 'alive' }), '0')
    assert.equal(sample(text, 'vmesh_member_state', { peer: 'hv-c', state: 'suspect' }), '1')
    assert.equal(sample(text, 'vmesh_member_state', { peer: 'hv-c', state: 'dead' }), '0')
    assert.equal(sample(text, 'vmesh_bandwidth_limit_bytes_per_second', { scope: 'node', peer: '' }), '+Inf')
    assert.equal(sample(text, 'vmesh_bandwidth_limit_bytes_per_second', { scope: 'peer', peer: 'hv-b' }), '1250000')
    m.bandwidth.setLimit(1_250_000)
    m.members.forget('hv-c')
    m.bandwidth.forgetPeer('hv-b')
    m.replica.forget('web01', 'hv-a')
    text = await m.text()
    assert.equal(sample(text, 'vmesh_bandwidth_limit_bytes_per_second', { scope: 'node', peer: '' }), '1250000')
    assert.equal(sample(text, 'vmesh_member_state', { peer: 'hv-c', state: 'suspect' }), undefined)
    assert.equal(sample(text, 'vmesh_bandwidth_limit_bytes_per_second', { scope: 'peer', peer: 'hv-b' }), undefined)
    assert.equal(sample(text, 'vmesh_replica_applied_generation', { vm: 'web01', source: 'hv-a' }), undefined)
  })

  it('forget drops every series of a VM and target pair', async () => {
    const m = createMetrics({ defaultMetrics: false })
    for (const t of ['hv-b', 'hv-c']) {
      m.replication.setAckedGeneration('web01', t, 1)
      m.replication.addSentBytes('web01', t, 5)
      m.replication.setState('web01', t, 'behind')
    }
    m.replication.forget('web01', 'hv-b')
    const text = await m.text()
    assert.doesNotMatch(text, /target="hv-b"/)
    assert.equal(sample(text, 'vmesh_replication_state', { vm: 'web01', target: 'hv-c', state: 'behind' }), '1')
    assert.equal(sample(text, 'vmesh_replication_sent_bytes_total', { vm: 'web01', target: 'hv-c' }), '5')
  })

  it('has default process metrics and default labels, on a private registry', async () => {
    const a = createMetrics({ labels: { node: 'hv-a' } })
    const b = createMetrics({ labels: { node: 'hv-b' } })
    a.members.setState('hv-b', 'dead')
    const text = await a.text()
    assert.match(text, /^process_cpu_user_seconds_total\{node="hv-a"\} /m)
    assert.match(text, /^nodejs_eventloop_lag_seconds\{node="hv-a"\} /m)
    assert.equal(sample(text, 'vmesh_member_state', { node: 'hv-a', peer: 'hv-b', state: 'dead' }), '1')
    assert.doesNotMatch(await b.text(), /vmesh_member_state\{/)
    assert.doesNotMatch(await globalRegistry.metrics(), /vmesh_/)
    assert.match(a.contentType, /^text\/plain/)
  })
})
