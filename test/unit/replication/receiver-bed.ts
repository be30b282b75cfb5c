/**
 * A replica registry and a receiver on a temporary folder, fresh for every test of the
 * `describe` that calls receiverBed() (mocha hooks), and stopped and removed after it. Tests read
 * `bed.rx`, `bed.replicas`, `bed.dir`; `bed.reopen(hooks)` starts both again on the same folder
 * with replica-store hooks (fault injection).
 */
import { ManualClock } from '../../../common/clock.ts'
import { silentLogger } from '../../../daemon/log.ts'
import { ReplicationReceiver } from '../../../daemon/replication/receiver.ts'
import { ReplicaRegistry } from '../../../daemon/replication/replicas.ts'
import { encodeReplicationItem, type ReplicationItem } from '../../../protocol/replication/index.ts'
import { tempDir } from '../../helpers/tmp.ts'
import type { FakeStream } from './fake-stream.ts'

type Hooks = ConstructorParameters<typeof ReplicaRegistry>[0]['hooks']

export interface ReceiverBed {
  readonly clock: ManualClock
  replicas: ReplicaRegistry
  rx: ReplicationReceiver
  dir: string
  /** Stops the receiver and the registry, starts both again on the same folder with `hooks`. */
  reopen: (hooks?: Hooks) => Promise<void>
}

export function receiverBed (prefix: string): ReceiverBed {
  let cleanup: (() => Promise<void>) | undefined
  const bed = { clock: new ManualClock() } as ReceiverBed
  const open = async (hooks?: Hooks): Promise<void> => {
    bed.replicas = new ReplicaRegistry({ clock: bed.clock, log: silentLogger(), ...(hooks !== undefined ? { hooks } : {}) }, { dir: bed.dir, fsync: false })
    await bed.replicas.start()
    bed.rx = new ReplicationReceiver({ clock: bed.clock, log: silentLogger(), replicas: bed.replicas, peerName: (id) => id === 'PEER-A' ? 'hv-a' : undefined })
    await bed.rx.start()
  }
  bed.reopen = async (hooks) => { await bed.rx.stop(); await bed.replicas.stop(); await open(hooks) }
  beforeEach(async () => {
    const tmp = await tempDir(prefix)
    bed.dir = tmp.dir
    cleanup = tmp.cleanup
    await open()
  })
  afterEach(async () => { await bed.rx.stop(); await bed.replicas.stop(); await cleanup?.() })
  return bed
}

/** Delivers each item as one chunk. */
export function sendItems (s: FakeStream, items: ReplicationItem[]): void { for (const i of items) s.deliver(encodeReplicationItem(i)) }
