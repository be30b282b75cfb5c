// The stand-in VM of the Windows tier's failover test, run by Windows Node under Wine. vm.cmd
// (written by win-vm.ts, run by cmd.exe for the `command` driver and the watchdog's fence)
// hands `start` and `stop` to this file:
//   node.exe fake-vm.mjs start NODE VM EPOCH   launch the VM (a detached node.exe running `run`)
//                                              and wait until it runs; exit 1 if it could not
//   node.exe fake-vm.mjs stop NODE VM          TerminateProcess the VM, wait until its locks are
//                                              free, log the stop; exit 1 if it is still there
//   node.exe fake-vm.mjs run NODE VM EPOCH     the VM itself
// The VM keeps two files open without sharing (libuv's UV_FS_O_EXLOCK): VM.NODE.lock, which
// vm.cmd's status probes, and VM.disk.lock, shared by every node, standing for the VM's disk.
// A second instance anywhere cannot take the disk lock: it logs `conflict` and exits. The log,
// events.log beside this file, has one line per event with its time in ms (Date.now()):
//   <ms> start NODE VM EPOCH   taken by the VM before it locks (no later than its real start)
//   <ms> stop NODE VM          taken after the VM is gone and its locks are free (no earlier)
//   <ms> conflict NODE VM EPOCH
// so intervals rebuilt from it can only look longer than they were, never shorter.
import { spawn } from 'node:child_process'
import { appendFileSync, closeSync, constants, existsSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const UV_FS_O_EXLOCK = 0x10000000 // libuv's win.h: share mode 0 (not exported by node:fs)
const dir = dirname(fileURLToPath(import.meta.url))
const [action, node, vm, epoch] = process.argv.slice(2)
if (node === undefined || vm === undefined) { process.stderr.write('usage: fake-vm.mjs start|stop|run NODE VM [EPOCH]\n'); process.exit(2) }
const nodeLock = join(dir, `${vm}.${node}.lock`)
const diskLock = join(dir, `${vm}.disk.lock`)
const pidFile = join(dir, `${vm}.${node}.pid`)
const log = (line) => { appendFileSync(join(dir, 'events.log'), `${line}\n`) }
const sleep = async (ms) => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** The fd of `p` opened exclusively, or undefined when another process holds it. */
function tryLock (p) {
  try { return openSync(p, constants.O_RDWR | constants.O_CREAT | (process.platform === 'win32' ? UV_FS_O_EXLOCK : 0)) } catch (err) {
    if (['EBUSY', 'EPERM', 'EACCES'].includes(err.code)) return undefined
    throw err
  }
}
function held (p) {
  const fd = tryLock(p)
  if (fd === undefined) return true
  closeSync(fd)
  return false
}

if (action === 'run') {
  const t0 = Date.now()
  if (tryLock(nodeLock) === undefined) process.exit(0) // already running on this node
  if (tryLock(diskLock) === undefined) { log(`${t0} conflict ${node} ${vm} ${epoch}`); process.exit(3) }
  writeFileSync(pidFile, String(process.pid))
  log(`${t0} start ${node} ${vm} ${epoch}`)
  setInterval(() => {}, 60_000)
} else if (action === 'start') {
  if (held(nodeLock)) process.exit(0)
  rmSync(pidFile, { force: true })
  // detached: out of this launcher's job object, so the VM outlives the launcher (as a Hyper-V VM
  // outlives the PowerShell that started it)
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'run', node, vm, String(epoch)], { detached: true, stdio: 'ignore', windowsHide: true })
  let exited
  child.on('exit', (code) => { exited = code })
  child.unref()
  for (let i = 0; i < 600; i++) {
    if (existsSync(pidFile)) process.exit(0)
    if (exited !== undefined) { process.stderr.write(`the VM exited with ${exited}\n`); process.exit(1) }
    await sleep(50)
  }
  process.stderr.write('the VM did not come up within 30 s\n')
  process.exit(1)
} else if (action === 'stop') {
  let pid
  try { pid = Number(readFileSync(pidFile, 'utf8')) } catch {}
  if (pid !== undefined && Number.isInteger(pid) && pid > 0) { try { process.kill(pid, 'SIGKILL') } catch {} }
  for (let i = 0; i < 400 && held(nodeLock); i++) await sleep(50)
  if (held(nodeLock)) { process.stderr.write('the VM is still running\n'); process.exit(1) }
  rmSync(pidFile, { force: true })
  log(`${Date.now()} stop ${node} ${vm}`)
} else {
  process.stderr.write(`unknown action ${action}\n`)
  process.exit(2)
}
