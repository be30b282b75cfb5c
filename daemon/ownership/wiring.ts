/**
 * Builds the failover side of the daemon from the config: the hypervisor driver, the
 * watchdog process (hosts only), the record store, and the OwnershipService.
 */
import { join } from 'node:path'
import { Level } from 'level'
import type { Libp2p } from '@libp2p/interface'
import type { Config } from '../../config/load.ts'
import { ownershipTiming } from '../../config/profiles.ts'
import type { Clock } from '../../common/clock.ts'
import type { Random } from '../../common/random.ts'
import type { Logger } from '../log.ts'
import { createDriver } from '../hypervisor/index.ts'
import type { HypervisorDriver } from '../hypervisor/driver.ts'
import { Watchdog } from '../watchdog/client.ts'
import { OwnershipService, type OwnershipHost } from './service.ts'

export interface OwnershipParts {
  service: OwnershipService
  driver?: HypervisorDriver
  watchdog?: Watchdog
  db: Level<string, string>
  start: () => Promise<void>
  stop: () => Promise<void>
}

export function createOwnership (config: Config, base: { clock: Clock, random: Random, log: Logger, libp2p: Libp2p, requestDial?: (id: string) => void }, host: OwnershipHost): OwnershipParts {
  const log = base.log.child({ svc: 'ownership' })
  const dataDir = config.node.dataDir
  const driver = config.node.role === 'host' ? createDriver(config.hypervisor, { cwd: config.dir, stateDir: join(dataDir, 'hypervisor'), clock: base.clock }) : undefined
  const watchdog = driver !== undefined
    ? new Watchdog({ clock: base.clock, log: log.child({ svc: 'watchdog' }), fenceAction: async (vm) => await driver.fenceAction(vm) }, { logFile: join(dataDir, 'watchdog.log'), stateFile: join(dataDir, 'watchdog-state.json') })
    : undefined
  const db = new Level<string, string>(join(dataDir, 'ownership'), { valueEncoding: 'utf8' })
  const peerIds: Record<string, string> = {}
  for (const p of config.mesh.peers) peerIds[p.name] = p.id
  const service = new OwnershipService({
    clock: base.clock,
    random: base.random,
    log,
    libp2p: base.libp2p,
    db,
    ...(driver !== undefined ? { driver } : {}),
    ...(watchdog !== undefined ? { watchdog } : {}),
    host,
    ...(base.requestDial !== undefined ? { requestDial: base.requestDial } : {})
  }, {
    self: config.node.name,
    voters: [{ id: config.node.name, role: config.node.role }, ...config.mesh.peers.map(p => ({ id: p.name, role: p.role }))],
    peerIds,
    vms: config.vms.map(v => ({ name: v.name, home: config.node.name, replicateTo: v.replicateTo, failover: v.failover, startOrder: v.startOrder, priority: v.priority })),
    timing: ownershipTiming(config.ownership),
    maxConcurrentStarts: config.ownership.maxConcurrentStarts
  })
  return {
    service,
    ...(driver !== undefined ? { driver } : {}),
    ...(watchdog !== undefined ? { watchdog } : {}),
    db,
    start: async () => {
      await db.open()
      await watchdog?.start()
      await service.start()
    },
    stop: async () => {
      await service.stop()
      await watchdog?.stop()
      await db.close()
    }
  }
}
