/**
 * What the ownership loop and service need from outside ownership: the replication side
 * (OwnershipHost, implemented by daemon/replication/ownership-host.ts) and the fencing watchdog
 * (daemon/watchdog/client.ts). Kept apart so loop.ts and service.ts both import down to it.
 */
import type { VmStartFiles } from '../hypervisor/driver.ts'
import type { GenerationRef } from './types.ts'

/** What ownership needs from replication (and, on the home node, the configured files). */
export interface OwnershipHost {
  /** Files to start `vm` from here: the originals on its home node, the finalized replica elsewhere. */
  filesForStart: (vm: string) => Promise<VmStartFiles>
  /**
   * Roll the local replica to `generation` (the latest consistent one when null) before a
   * start; `point` (an operator's --point) overrides both.
   */
  finalize: (vm: string, generation: GenerationRef | null, point?: string) => Promise<void>
  /**
   * Planned failover: ship the final generation to `to`; resolves with it. `signal` aborts it
   * when the machine gives the handoff up (the target died): the VM is about to run again, so
   * the ship must not go on reading it as final.
   */
  shipFinal: (vm: string, to: string, signal?: AbortSignal) => Promise<GenerationRef>
  /** This node is no longer the VM's owner: its copy becomes a replica of `owner`. */
  demoted: (vm: string, owner: string, epoch: number) => void
  /** Ownership moved (for replication direction and status). */
  ownerChanged?: (vm: string, owner: string, epoch: number) => void
}

/** The slice of a watchdog the driver uses (daemon/watchdog/client.ts implements it). */
export interface FencingWatchdog {
  arm: (vm: string, deadline: number) => Promise<void>
  disarm: (vm: string) => Promise<void> | void
  onFence: (fn: (r: { vm: string, at: number, ok: boolean }) => void) => () => void
  inherited: () => Array<{ vm: string, deadline: number }>
}
