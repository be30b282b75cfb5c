/**
 * One class per condition a hypervisor driver can report. Callers (ownership, CLI) branch on
 * `code`; the message is for humans and carries the command's exit code and stderr tail.
 */
import { VmeshError } from '../../common/errors.ts'

/** An external command ran and exited with a status the driver does not accept. */
export class HypervisorCommandFailedError extends VmeshError {
  constructor (readonly argv0: string, readonly exitCode: number | null, readonly stderrTail: string, readonly what = 'command', options?: { cause?: unknown }) {
    super('ERR_HYPERVISOR_COMMAND_FAILED', `${what} failed (${argv0}, exit ${exitCode ?? 'signal'})${stderrTail !== '' ? `: ${stderrTail}` : ''}`, options)
  }
}

/** An external command did not finish within its timeout and was killed. */
export class HypervisorTimeoutError extends VmeshError {
  constructor (readonly argv0: string, readonly timeoutMs: number) {
    super('ERR_HYPERVISOR_TIMEOUT', `${argv0} did not finish within ${timeoutMs} ms and was killed`)
  }
}

/** An external command could not be started at all (missing binary, bad cwd, ...). */
export class HypervisorSpawnError extends VmeshError {
  constructor (readonly argv0: string, options?: { cause?: unknown }) {
    super('ERR_HYPERVISOR_SPAWN', `cannot run ${argv0}: ${options?.cause instanceof Error ? options.cause.message : String(options?.cause)}`, options)
  }
}

/** A command's output could not be understood (bad JSON, unexpected shape, too large). */
export class HypervisorOutputError extends VmeshError {
  constructor (readonly what: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_HYPERVISOR_BAD_OUTPUT', `${what}: unexpected output: ${detail}`, options)
  }
}

/**
 * A Hyper-V cmdlet threw: `message` is the cmdlet's own (e.g. "Identifier already exists."),
 * `errorId` PowerShell's FullyQualifiedErrorId when it gave one.
 */
export class HypervisorCmdletError extends VmeshError {
  constructor (readonly what: string, readonly cmdletMessage: string, readonly errorId = '') {
    super('ERR_HYPERVISOR_CMDLET', `${what} failed: ${cmdletMessage}${errorId !== '' ? ` (${errorId})` : ''}`)
  }
}

/** The long-lived PowerShell child died or broke its reply protocol; the next call starts a new one. */
export class PowerShellSessionError extends VmeshError {
  constructor (readonly executable: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_POWERSHELL_SESSION', `${executable}: ${detail}`, options)
  }
}

/**
 * Another VM (a different Hyper-V ID) already has this name here: importing would make two
 * VMs of one name, which every later by-name call would find ambiguous.
 */
export class VmNameConflictError extends VmeshError {
  constructor (readonly vm: string, readonly existingId: string, readonly wantedId: string) {
    super('ERR_VM_NAME_CONFLICT', `VM "${vm}": a different VM (ID ${existingId}) has this name on this host; the replica is ${wantedId}`)
  }
}

/** The hypervisor does not know this VM. */
export class VmNotFoundError extends VmeshError {
  constructor (readonly vm: string, detail = '') {
    super('ERR_VM_NOT_FOUND', `VM "${vm}" not found${detail !== '' ? `: ${detail}` : ''}`)
  }
}

/** `start` asked for a VM that is already running here. */
export class VmAlreadyRunningError extends VmeshError {
  constructor (readonly vm: string) {
    super('ERR_VM_ALREADY_RUNNING', `VM "${vm}" is already running`)
  }
}

/** `start` carried an epoch lower than one this driver already saw for the VM. */
export class StaleEpochError extends VmeshError {
  constructor (readonly vm: string, readonly epoch: number, readonly highest: number) {
    super('ERR_STALE_EPOCH', `refusing to start VM "${vm}" at epoch ${epoch}: epoch ${highest} was already seen`)
  }
}

/** The files handed to `start` lack something the driver needs (the VM's XML, its .vmcx, ...). */
export class VmFilesError extends VmeshError {
  constructor (readonly vm: string, detail: string) {
    super('ERR_VM_FILES', `VM "${vm}": ${detail}`)
  }
}

/** The driver's configuration cannot work (unknown placeholder, missing section, ...). */
export class HypervisorConfigError extends VmeshError {
  constructor (detail: string) {
    super('ERR_HYPERVISOR_CONFIG', detail)
  }
}

/** The driver cannot do this operation (e.g. `list` without a `list` command configured). */
export class HypervisorUnsupportedError extends VmeshError {
  constructor (readonly kind: string, readonly operation: string, detail = '') {
    super('ERR_HYPERVISOR_UNSUPPORTED', `the ${kind} driver cannot ${operation}${detail !== '' ? `: ${detail}` : ''}`)
  }
}

/** The driver's state file (highest epochs, qemu runtime) is unreadable or damaged. */
export class HypervisorStateError extends VmeshError {
  constructor (readonly file: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_HYPERVISOR_STATE', `${file}: ${detail}`, options)
  }
}

/** `vmesh protect` named a VM that is already in the config. */
export class VmAlreadyProtectedError extends VmeshError {
  constructor (readonly vm: string) {
    super('ERR_VM_ALREADY_PROTECTED', `VM "${vm}" is already listed under vms:`)
  }
}

/** Last `max` characters of a command's stderr, trimmed, for error messages. */
export function tail (s: string, max = 500): string {
  const t = s.trim()
  return t.length <= max ? t : `…${t.slice(t.length - max)}`
}

/**
 * QEMU already runs an NBD server, and not on the socket vmesh asked for (QEMU holds one server
 * at a time): the changed blocks cannot be read through it, so the hash scan answers.
 */
export class QemuNbdServerBusyError extends VmeshError {
  constructor (readonly socket: string) {
    super('ERR_QEMU_NBD_SERVER_BUSY', `QEMU already runs an NBD server that does not listen on ${socket} (another tool started it; QEMU holds one at a time): stop it (QMP nbd-server-stop) so vmesh can read dirty blocks; until then the hash scan answers`)
  }
}

/**
 * An NBD server broke the protocol or refused what a dirty-bitmap read needs (structured
 * replies, the `qemu:dirty-bitmap:` meta context, a block-status request): the connection is
 * closed and the round fails (the bitmap is merged back, nothing is lost).
 */
export class NbdProtocolError extends VmeshError {
  constructor (readonly detail: string, options?: { cause?: unknown }) {
    super('ERR_NBD_PROTOCOL', `nbd: ${detail}`, options)
  }
}
