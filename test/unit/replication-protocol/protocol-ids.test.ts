import assert from 'node:assert/strict'
import { REPLICATION_PROTOCOLS, replicationProtocols, streamCarriesHaveQuery } from '../../../protocol/replication/index.ts'

describe('replication protocol IDs: 1.2.0 (content index) is opt-in', () => {
  it('without contentIndex.enabled a node speaks 1.1.0 and 1.0.0 only, newest first; with it, 1.2.0 first', () => {
    assert.deepEqual([...replicationProtocols(false)], ['/vmesh/replication/1.1.0', '/vmesh/replication/1.0.0'])
    assert.deepEqual([...replicationProtocols(true)], [...REPLICATION_PROTOCOLS])
    assert.equal(REPLICATION_PROTOCOLS[0], '/vmesh/replication/1.2.0')
    for (const p of replicationProtocols(false)) assert.equal(streamCarriesHaveQuery(p), false)
  })
})
