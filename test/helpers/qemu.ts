/**
 * Running qemu-img / qemu-io from tests. Tests call `requireQemu(this)` in a `before` hook so the
 * suite skips with a clear message when the tools are missing. Every command gets `-f FORMAT`
 * (never let qemu probe) and a timeout; a non-zero exit rejects with the tool's stderr.
 */
import { execFile, spawnSync } from 'node:child_process'

export type QemuFormat = 'vpc' | 'vhdx' | 'raw' | 'qcow2'

const available = new Map<string, boolean>()

/** True when `tool --version` runs. Cached per process. */
export function hasTool (tool: string): boolean {
  let ok = available.get(tool)
  if (ok === undefined) {
    const r = spawnSync(tool, ['--version'], { stdio: 'ignore', timeout: 10_000 })
    ok = r.status === 0
    available.set(tool, ok)
  }
  return ok
}

/** Skips the current test or suite unless qemu-img and qemu-io are installed. */
export function requireQemu (ctx: Mocha.Context): void {
  for (const tool of ['qemu-img', 'qemu-io']) {
    if (!hasTool(tool)) {
      console.log(`      (skipped: ${tool} is not installed; install qemu-utils to run the qemu oracle tests)`)
      ctx.skip()
    }
  }
}

export class QemuToolError extends Error {
  constructor (readonly tool: string, readonly args: string[], readonly stderr: string, readonly exitCode: number | null) {
    super(`${tool} ${args.join(' ')} failed (${exitCode ?? 'signal'}): ${stderr.trim()}`)
    this.name = 'QemuToolError'
  }
}

/** Runs a tool, resolving with its stdout; rejects with QemuToolError on failure or timeout. */
export async function run (tool: string, args: string[], timeoutMs = 60_000): Promise<string> {
  return await new Promise((resolve, reject) => {
    execFile(tool, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err !== null) {
        reject(new QemuToolError(tool, args, stderr !== '' ? stderr : err.message, typeof err.code === 'number' ? err.code : null))
      } else {
        resolve(stdout)
      }
    })
  })
}

/** `qemu-img create -f FORMAT [-o k=v,...] FILE SIZE`. */
export async function qemuImgCreate (file: string, format: QemuFormat, size: number | string, options: Record<string, string | number | boolean> = {}): Promise<void> {
  const args = ['create', '-q', '-f', format]
  const opts = Object.entries(options).map(([k, v]) => `${k}=${typeof v === 'boolean' ? (v ? 'on' : 'off') : v}`)
  if (opts.length > 0) args.push('-o', opts.join(','))
  args.push(file, String(size))
  await run('qemu-img', args)
}

/** `qemu-img create -f FORMAT -b BACKING -F BACKING_FORMAT FILE` (differencing / overlay). */
export async function qemuImgCreateChild (file: string, format: QemuFormat, backing: string, backingFormat: QemuFormat): Promise<void> {
  await run('qemu-img', ['create', '-q', '-f', format, '-b', backing, '-F', backingFormat, file])
}

export interface QemuImgInfo {
  'virtual-size': number
  'actual-size'?: number
  'cluster-size'?: number
  format: string
  filename: string
  'dirty-flag'?: boolean
  'backing-filename'?: string
  'format-specific'?: unknown
}

/** `qemu-img info -f FORMAT --output=json FILE`. */
export async function qemuImgInfo (file: string, format: QemuFormat): Promise<QemuImgInfo> {
  return JSON.parse(await run('qemu-img', ['info', '-f', format, '--output=json', file])) as QemuImgInfo
}

/** `qemu-img compare -f A -F B a b`: true when the guest-visible contents are identical. */
export async function qemuImgCompare (a: string, aFormat: QemuFormat, b: string, bFormat: QemuFormat): Promise<boolean> {
  try {
    await run('qemu-img', ['compare', '-q', '-f', aFormat, '-F', bFormat, a, b])
    return true
  } catch (err) {
    if (err instanceof QemuToolError && err.exitCode === 1) return false
    throw err
  }
}

/** `qemu-io -f FORMAT -c CMD ... FILE`, e.g. `write -P 0xab 1M 64k`. */
export async function qemuIo (file: string, format: QemuFormat, commands: string[]): Promise<string> {
  const args = ['-f', format]
  for (const c of commands) args.push('-c', c)
  args.push(file)
  return await run('qemu-io', args)
}

/** Writes `length` bytes of `pattern` at guest `offset` through qemu-io. */
export async function qemuWrite (file: string, format: QemuFormat, offset: number, length: number, pattern = 0xab): Promise<void> {
  await qemuIo(file, format, [`write -P 0x${pattern.toString(16)} ${offset} ${length}`])
}
