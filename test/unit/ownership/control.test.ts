import assert from 'node:assert/strict'
import { OwnershipControl, parseFailoverRequest } from '../../../daemon/ownership/control.ts'
import type { Handler } from '../../../daemon/api/server.ts'

describe('ownership/control: POST /v1/failover and the member feed', () => {
  it('a body that does not fit the schema is a FailoverRequestError (400, ERR_BAD_REQUEST) naming the field', () => {
    const bad = (body: unknown, field: string): void => {
      assert.throws(() => parseFailoverRequest(body), (err: Error & { code?: string }) => err.name === 'FailoverRequestError' && err.code === 'ERR_BAD_REQUEST' && err.message.includes(field))
    }
    bad({}, 'vm')
    bad({ vm: '' }, 'vm')
    bad({ vm: 'web01', to: 3 }, 'to')
    bad({ vm: 'web01', point: 'latest' }, 'point')
    bad({ vm: 'web01', planned: true }, 'a planned failover needs "to"')
    bad({ vm: 'web01', planned: true, to: 'b', point: '4' }, 'takes no point')
    bad({ vm: 'web01', force: 'yes' }, 'force')
    assert.deepEqual(parseFailoverRequest({ vm: 'web01', to: 'b', planned: true }), { vm: 'web01', to: 'b', planned: true })
  })

  it('routes a planned or an operator failover; refuses an unknown point before asking ownership', async () => {
    const calls: string[] = []
    const routes = new Map<string, Handler>()
    let listener: ((e: { id: string, state: 'alive' | 'suspect' | 'dead' }) => void) | undefined
    const control = new OwnershipControl({
      ownership: {
        memberChanged: (id, state) => { calls.push(`member ${id} ${state}`) },
        addHomeVm: (spec) => { calls.push(`add ${spec.name}`) },
        plannedFailover: async (vm, to) => { calls.push(`planned ${vm} ${to}`) },
        operatorFailover: async (vm, o) => { calls.push(`operator ${vm} ${JSON.stringify(o)}`) },
        status: () => [],
        timeline: [],
        stats: { decodeErrors: 0, starts: 0, stops: 0, startFailures: 0 }
      },
      membership: { members: () => [{ id: 'p1', state: 'alive' }], onMember: (fn) => { listener = fn; return () => { listener = undefined } } },
      points: async () => ({ replicas: [{ points: [{ id: '12' }] }] }),
      api: { route: (m, p, h) => { routes.set(`${m} ${p}`, h) }, clientErrors: () => {} }
    })
    const call = async (body: unknown): Promise<unknown> => await (routes.get('POST /v1/failover') as Handler)({ body, query: new URLSearchParams(), signal: new AbortController().signal })
    assert.deepEqual(await call({ vm: 'web01', to: 'b', planned: true }), { accepted: true })
    await call({ vm: 'web01', point: '12', force: true })
    await assert.rejects(call({ vm: 'web01', point: '13' }), { name: 'FailoverRequestError' })
    control.start()
    listener?.({ id: 'p2', state: 'dead' })
    control.stop()
    assert.equal(listener, undefined)
    assert.deepEqual(control.reload({ node: 'a', vms: [{ name: 'n1', replicateTo: [], failover: 'auto', startOrder: 0, priority: 0 } as never] }, { node: 'a', vms: [] }), ['ownership.vms'])
    assert.deepEqual(calls, ['planned web01 b', 'operator web01 {"force":true,"point":"12"}', 'member p1 alive', 'member p2 dead', 'add n1'])
  })
})
