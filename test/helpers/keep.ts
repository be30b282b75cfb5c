/**
 * Keeping the evidence of a failed integration test: the cluster folder (daemon logs, replica
 * stores, journals) stays on disk when any test of the suite failed, and its path is printed.
 */
import type { LocalCluster } from '../../daemon/cluster/local-cluster.ts'

/**
 * For a suite's `after` hook: destroys `c`, keeping its folder if a test of the suite failed or
 * never ran (a failed `before` hook).
 */
export async function destroyKeepingFailures (ctx: Mocha.Context, c: LocalCluster | undefined): Promise<void> {
  if (c === undefined) return
  const failed = ctx.test?.parent?.tests.some(t => t.state === 'failed' || (t.state === undefined && !t.isPending())) === true
  await c.destroy({ keep: failed })
  if (failed) process.stderr.write(`kept the cluster folder of the failed suite: ${c.dir}\n`)
}
