/**
 * What a test failover is on disk and in `vmesh status --json` (`tests`). Types only: the status
 * document imports them without pulling the service in.
 */

export type TestPhase = 'restoring' | 'starting' | 'running'

/** What test.json holds, and what start() returns. */
export interface TestFailoverRecord {
  vm: string
  testName: string
  node: string
  point: string
  /** The point's generation; 0 while restoring. */
  generation: number
  /** The node the replica (and so the point) came from. */
  from: string
  pointCreatedAt: number
  /** `<dataDir>/test-failover/<vm>`: test.json, files/ (the restored point), instance/ (the hypervisor's runtime files). */
  dir: string
  /** Wall-clock ms of the request. */
  startedAt: number
  phase: TestPhase
}

export type TestFailoverEntry =
  | (TestFailoverRecord & { running: boolean | null })
  | { vm: string, testName: string, dir: string, phase: 'damaged', error: string, running: null }

/** What the control API drives (TestFailoverService implements it). */
export interface TestFailoverOps {
  startTest: (vm: string, opts?: { point?: string }) => Promise<TestFailoverRecord>
  cleanup: (vm: string) => Promise<{ vm: string, testName: string, removed: boolean }>
  list: (opts?: { probe?: boolean }) => Promise<TestFailoverEntry[]>
}
