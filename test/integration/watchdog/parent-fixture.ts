/**
 * A stand-in daemon for the watchdog integration tests: starts a Watchdog (the real process)
 * with the command driver's stop script, arms one VM and reports to a status file, so the test
 * can SIGSTOP or SIGKILL it.
 *   node --import tsx parent-fixture.ts MODE VM FENCE_MS DIR STATUS_FILE [WATCHDOG_STATE_FILE]
 * MODE once: arm once; rearm: arm every 100 ms. Status lines: "wd <pid>", "armed <wall ms>"
 * (written after the watchdog acknowledged that arm).
 */
import { appendFileSync } from 'node:fs'
import { join } from 'node:path'
import { systemClock } from '../../../common/clock.ts'
import { CommandDriver } from '../../../daemon/hypervisor/command.ts'
import { defaultRunner } from '../../../daemon/hypervisor/run.ts'
import { Watchdog } from '../../../daemon/watchdog/client.ts'

const [mode, vm, fenceMsArg, dir, statusFile, stateFile] = process.argv.slice(2) as [string, string, string, string, string, string | undefined]
const fenceMs = Number(fenceMsArg)
const driver = new CommandDriver({ start: 'true', stop: './stop-vm.sh {vm}', status: './status-vm.sh {vm}', timeout: 5000 }, { cwd: dir, stateDir: join(dir, 'state'), clock: systemClock, run: defaultRunner })
const wd = new Watchdog({ clock: systemClock, fenceAction: async v => await driver.fenceAction(v) }, { logFile: join(dir, 'watchdog.log'), ...(stateFile !== undefined ? { stateFile } : {}) })
await wd.start()
appendFileSync(statusFile, `wd ${wd.status().pid}\n`)

async function armOnce (): Promise<void> {
  const wall = Date.now()
  await wd.arm(vm, systemClock.now() + fenceMs)
  appendFileSync(statusFile, `armed ${wall}\n`)
}

await armOnce()
if (mode === 'rearm') {
  setInterval(() => { armOnce().catch(() => {}) }, 100)
} else {
  setInterval(() => {}, 60_000)
}
