/**
 * The one shape of a daemon service, as the composition root (components.ts) and the Daemon
 * drive it: `start()` and `stop()` are idempotent (a second call does nothing), the Daemon
 * starts services in the order the root lists them and stops them in reverse. A service that
 * can apply config changes live implements `reload(next, prev)` over its own slice of the config
 * and returns the names of what it applied (for `vmesh reload`'s answer).
 */
export interface Startable<Slice = never> {
  start: () => Promise<void> | void
  stop: () => Promise<void> | void
  reload?: (next: Slice, prev: Slice) => Promise<string[]> | string[]
}
