import assert from 'node:assert/strict'
import { diskConditions, memberConditions, meshReporter } from '../../../daemon/alerts/conditions.ts'

const m = (name: string, state: 'alive' | 'suspect' | 'dead', role: 'host' | 'witness' = 'host', everSeen = true) => ({ name, state, role, everSeen })

describe('daemon/alerts/conditions: who tells, and what counts', () => {
  it('the reporter is the first living host other than the subject, so a returning host\'s recovery is told by the node that told its death', () => {
    const self = { name: 'b', role: 'host' as const }
    assert.equal(meshReporter(self, [m('a', 'dead'), m('c', 'alive'), m('w', 'alive', 'witness')], 'a'), 'b')
    // a is back: for a's own incident b is still the reporter, for anything else a is
    assert.equal(meshReporter(self, [m('a', 'alive'), m('c', 'alive')], 'a'), 'b')
    assert.equal(meshReporter(self, [m('a', 'alive'), m('c', 'dead')], 'c'), 'a')
    assert.equal(meshReporter({ name: 'w', role: 'witness' }, [m('a', 'dead'), m('b', 'dead')], 'a'), undefined, 'a witness never reports')
    assert.equal(meshReporter(self, [m('a', 'suspect')], 'c'), 'a', 'a suspect host may still report: not skipped')
  })

  it('dead hosts and witnesses; a never-seen peer only after the startup grace', () => {
    assert.deepEqual(memberConditions([m('a', 'dead'), m('w', 'dead', 'witness'), m('c', 'suspect'), m('d', 'dead', 'host', false)], 10_000).map(c => c.key), ['host-dead:a', 'witness-lost:w'])
    assert.deepEqual(memberConditions([m('d', 'dead', 'host', false)], 60_000).map(c => c.key), ['host-dead:d'])
  })

  it('disk: low below diskLowPercent, full below diskFullPercent', () => {
    assert.deepEqual(diskConditions({ path: '/d', freeBytes: 50, totalBytes: 100 }, 10, 2), [])
    assert.deepEqual(diskConditions({ path: '/d', freeBytes: 9, totalBytes: 100 }, 10, 2).map(c => c.kind), ['disk-low'])
    assert.deepEqual(diskConditions({ path: '/d', freeBytes: 1, totalBytes: 100 }, 10, 2).map(c => c.kind), ['disk-full'])
  })
})
