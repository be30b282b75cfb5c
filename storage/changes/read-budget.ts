/**
 * A read budget for scans: every byte a hash scan reads from a disk file is taken from it first,
 * so the scans of a host together never read faster than its rate. The daemon supplies one
 * shared budget per host (daemon/bandwidth/scan-budget.ts); storage only sees this interface.
 */
export interface ReadBudget {
  /** Resolves when `bytes` may be read; rejects (AbortedError) when `signal` fires first. */
  take: (bytes: number, opts?: { signal?: AbortSignal, flow?: string }) => Promise<void>
}
