/**
 * Loads a config file: read → YAML parse (with line tracking) → strict schema → resolve paths
 * against the file's folder → expand profiles → load the key files it names → deep-freeze.
 * Every failure is a typed error naming the file, the key path and the line, and nothing is
 * started with a config that did not pass.
 */
import { readFile } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { LineCounter, parseDocument, isNode } from 'yaml'
import type { PrivateKey, PeerId } from '@libp2p/interface'
import { ConfigInvalidError, ConfigKeyFileError, ConfigNotFoundError, ConfigParseError, type ConfigIssue } from './errors.ts'
import { rawConfigSchema, vmSchema, parseHostPort, defined, type RawConfig, type AlertsConfig } from './schema.ts'
import { PROFILES, resolveOwnership, type DetectorProfile, type OwnershipProfile } from './profiles.ts'
import { KeyFileError, loadIdentity, loadPsk, readSecretText } from './identity.ts'

export type Role = 'host' | 'witness'

export interface PeerConfig {
  name: string
  id: string
  addrs: string[]
  role: Role
  limitBytesPerSec?: number
  site?: string
}

export interface VmConfig {
  name: string
  disks: string[]
  files: string[]
  replicateTo: string[]
  failover: 'auto' | 'manual'
  priority: number
  startOrder: number
  /** Demand counted against a host's capacity (absent: not counted). */
  memoryMiB?: number
  vcpus?: number
  startAfter: string[]
  startAfterTimeoutMs: number
  blockSizeBytes: number
  scanIntervalMs: number
  quietBudgetMs: number
  recoveryPoints: { count: number, keepAllWithinMs: number, hourlyBeyond: boolean }
  seed: 'full' | 'existing'
  limitBytesPerSec?: number
  verifyIntervalMs?: number
  /** How changes are found (see schema.ts). */
  changeSource: 'auto' | 'scan' | 'qemu-bitmap' | 'rct'
  /** QMP socket of a VM started outside vmesh (absolute). */
  qmpPath?: string
  /** Read bitmap generations of a one-disk VM from a fleecing point (see schema.ts). */
  fleece: boolean
  /** Shortest time between two change rounds of a disk (see schema.ts); absent: by source. */
  captureGapMs?: number
  /** Bytes a copied point may hold (0: fleecing jobs only; see schema.ts). */
  pointCopyBudgetBytes: number
  /** The VM's RPO target (alerts: `rpo-breach`). */
  rpoMs: number
}

export interface Config {
  /** Absolute path of the config file. */
  file: string
  dir: string
  node: {
    name: string
    identityPath: string
    listen: string[]
    dataDir: string
    api: { host: string, port: number }
    role: Role
    site?: string
    /** Configured capacity; a dimension left out is asked of the hypervisor. */
    capacity?: { memoryMiB?: number, vcpus?: number, reserveMemoryMiB: number }
  }
  mesh: { profile: 'lan' | 'wan', pskPath?: string, peers: PeerConfig[], detector: DetectorProfile, dialBackoffMinMs: number, dialBackoffMaxMs: number, relay: { serve: boolean, via: string[], holePunch: boolean } }
  ownership: OwnershipProfile & { maxConcurrentStarts: number }
  hypervisor: RawConfig['hypervisor']
  vms: VmConfig[]
  bandwidth: { limitBytesPerSec: number, schedule: Array<{ days: number[], fromMinute: number, toMinute: number, limitBytesPerSec: number }> }
  /** Host-wide read budget of hash scans (Infinity: unbounded). */
  scan: { budgetBytesPerSec: number }
  /** The replica holder's content index (schema.ts `contentIndex`). */
  contentIndex: { enabled: boolean, maxEntries: number }
  log: { level: string }
  /** The web dashboard (schema.ts `dashboard`); TLS file paths absolute. */
  dashboard: { listen?: { host: string, port: number }, tls?: { certPath: string, keyPath: string }, publicUrl?: string, loginTtlMs: number, sessionTtlMs: number }
  /** Alert sinks (secret and CA file paths absolute) and thresholds. */
  alerts: AlertsConfig
}

export interface LoadedConfig {
  config: Config
  /** Secrets stay out of the frozen config object so it can be logged. */
  secrets: { privateKey: PrivateKey, peerId: PeerId, psk?: Uint8Array, alerts?: AlertSecrets }
}

export interface LoadOptions {
  /** Skip reading key files (commands that only need the shape, e.g. `peer add`). @default false */
  skipSecrets?: boolean
}

function formatPath (path: ReadonlyArray<PropertyKey>): string {
  let out = ''
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : (out === '' ? String(p) : `.${String(p)}`)
  return out
}

/** Parses and validates config text. Exposed for tests and for `peer add`'s re-validation. */
export function parseConfigText (text: string, file: string): { raw: RawConfig, lineOf: (path: ReadonlyArray<PropertyKey>) => number | undefined } {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false })
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!
    throw new ConfigParseError(file, e.linePos?.[0]?.line, e.message.split('\n')[0] ?? e.message)
  }
  const lineOf = (path: ReadonlyArray<PropertyKey>): number | undefined => {
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n) as unknown[], true)
      if (isNode(node) && node.range != null) return lineCounter.linePos(node.range[0]).line
    }
    return undefined
  }
  const data = doc.toJS() ?? {}
  const mangled = mangledStrings(data)
  if (mangled.length > 0) {
    throw new ConfigInvalidError(file, mangled.map(({ path, what }) => {
      const line = lineOf(path)
      const message = `contains ${what}: a double-quoted YAML string turns \\v, \\t, \\n, \\f, \\a, \\b, \\e, \\0 into control characters — write Windows paths in single quotes ('C:\\vms\\web01.vhdx') or with forward slashes`
      return line === undefined ? { path: formatPath(path), message } : { path: formatPath(path), message, line }
    }))
  }
  const parsed = rawConfigSchema.safeParse(data)
  if (!parsed.success) {
    const issues: ConfigIssue[] = parsed.error.issues.map(i => {
      let path = [...i.path]
      let message = i.message
      if (i.code === 'unrecognized_keys') {
        const keys = (i as { keys: string[] }).keys
        path = [...path, keys[0] as string]
        message = `unknown key${keys.length > 1 ? 's' : ''} ${keys.map(k => `"${k}"`).join(', ')}`
      }
      const line = lineOf(path)
      return line === undefined ? { path: formatPath(path), message } : { path: formatPath(path), message, line }
    })
    throw new ConfigInvalidError(file, issues)
  }
  return { raw: parsed.data, lineOf }
}

// never meaningful in a config value; \t and \n are, except in a Windows path
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/
const WINDOWS_PATH = /^[A-Za-z]:/

/**
 * String values that a double-quoted YAML string has mangled: `"C:\vms\x.vhdx"` holds a
 * vertical tab where the author wrote `\v`, `"C:\temp"` a tab. Found before the schema so the
 * error names the cause instead of a missing file later.
 */
function mangledStrings (v: unknown, path: Array<string | number> = []): Array<{ path: Array<string | number>, what: string }> {
  if (typeof v === 'string') {
    const c = CONTROL.exec(v)?.[0] ?? (WINDOWS_PATH.test(v) ? /[\t\n\r]/.exec(v)?.[0] : undefined)
    return c === undefined ? [] : [{ path, what: `the control character U+${c.charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()}` }]
  }
  if (Array.isArray(v)) return v.flatMap((x, i) => mangledStrings(x, [...path, i]))
  if (v !== null && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => mangledStrings(x, [...path, k]))
  return []
}

/** Builds the normalized, frozen config from validated raw data. */
export function normalizeConfig (raw: RawConfig, file: string): Config {
  const dir = dirname(file)
  const abs = (p: string): string => isAbsolute(p) ? p : resolve(dir, p)
  const profile = PROFILES[raw.mesh.profile]
  const detector = { ...profile.detector, ...defined(raw.mesh.detector) }
  const { maxConcurrentStarts, ...own } = raw.ownership
  const ownership = { ...resolveOwnership(profile.ownership, defined(own)), maxConcurrentStarts: maxConcurrentStarts ?? raw.hypervisor.maxConcurrentStarts }
  const config: Config = {
    file,
    dir,
    node: {
      name: raw.node.name,
      identityPath: abs(raw.node.identity),
      listen: raw.node.listen,
      dataDir: abs(raw.node.dataDir),
      api: parseHostPort(raw.node.api) as { host: string, port: number },
      role: raw.node.role,
      ...(raw.node.site !== undefined ? { site: raw.node.site } : {}),
      ...(raw.node.capacity !== undefined ? { capacity: defined(raw.node.capacity) } : {})
    },
    mesh: {
      profile: raw.mesh.profile,
      ...(raw.mesh.psk !== undefined ? { pskPath: abs(raw.mesh.psk) } : {}),
      peers: raw.mesh.peers.map(p => ({ name: p.name, id: p.id, addrs: p.addrs, role: p.role, ...(p.limit !== undefined ? { limitBytesPerSec: p.limit } : {}), ...(p.site !== undefined ? { site: p.site } : {}) })),
      detector,
      dialBackoffMinMs: raw.mesh.dialBackoffMin,
      dialBackoffMaxMs: raw.mesh.dialBackoffMax,
      relay: raw.mesh.relay
    },
    ownership,
    hypervisor: raw.hypervisor,
    vms: raw.vms.map(v => toVmConfig(v, abs)),
    bandwidth: { limitBytesPerSec: raw.bandwidth.limit, schedule: raw.bandwidth.schedule },
    scan: { budgetBytesPerSec: raw.scan.budget },
    contentIndex: raw.contentIndex,
    log: raw.log,
    dashboard: {
      ...(raw.dashboard.listen !== undefined ? { listen: parseHostPort(raw.dashboard.listen) as { host: string, port: number } } : {}),
      ...(raw.dashboard.tls !== undefined ? { tls: { certPath: abs(raw.dashboard.tls.cert), keyPath: abs(raw.dashboard.tls.key) } } : {}),
      ...(raw.dashboard.publicUrl !== undefined ? { publicUrl: raw.dashboard.publicUrl } : {}),
      loginTtlMs: raw.dashboard.loginTtl,
      sessionTtlMs: raw.dashboard.sessionTtl
    },
    alerts: { ...raw.alerts, sinks: raw.alerts.sinks.map(s => s.type === 'webhook' ? { ...s, ...(s.secretFile !== undefined ? { secretFile: abs(s.secretFile) } : {}) } : { ...s, ...(s.caFile !== undefined ? { caFile: abs(s.caFile) } : {}), ...(s.passwordFile !== undefined ? { passwordFile: abs(s.passwordFile) } : {}) }) }
  }
  return deepFreeze(config)
}

function toVmConfig (v: RawConfig['vms'][number], abs: (p: string) => string): VmConfig {
  return {
    name: v.name,
    disks: v.disks.map(abs),
    files: v.files.map(abs),
    replicateTo: v.replicateTo,
    failover: v.failover,
    priority: v.priority,
    startOrder: v.startOrder,
    ...(v.memoryMiB !== undefined ? { memoryMiB: v.memoryMiB } : {}),
    ...(v.vcpus !== undefined ? { vcpus: v.vcpus } : {}),
    startAfter: v.startAfter,
    startAfterTimeoutMs: v.startAfterTimeout,
    blockSizeBytes: v.blockSize,
    scanIntervalMs: v.scanInterval,
    quietBudgetMs: v.quietBudget,
    recoveryPoints: { count: v.recoveryPoints.count, keepAllWithinMs: v.recoveryPoints.keepAllWithin, hourlyBeyond: v.recoveryPoints.hourlyBeyond },
    seed: v.seed,
    ...(v.limit !== undefined ? { limitBytesPerSec: v.limit } : {}),
    ...(v.verifyInterval !== undefined ? { verifyIntervalMs: v.verifyInterval } : {}),
    changeSource: v.changeSource,
    ...(v.qmp !== undefined ? { qmpPath: abs(v.qmp) } : {}),
    fleece: v.fleece,
    ...(v.captureGap !== undefined ? { captureGapMs: v.captureGap } : {}),
    pointCopyBudgetBytes: v.pointCopyBudget,
    rpoMs: v.rpo
  }
}

/** A VM entry with every default, for a VM this node runs without listing it (it took it over). */
export function defaultVmConfig (name: string): VmConfig {
  return toVmConfig(vmSchema.parse({ name }), (p) => p)
}

export function deepFreeze<T> (o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o)
    for (const v of Object.values(o)) deepFreeze(v)
  }
  return o
}

/** Reads, validates and freezes the config at `path`, loading its key files. */
export async function loadConfig (path: string, opts: LoadOptions = {}): Promise<LoadedConfig> {
  const file = resolve(path)
  let text: string
  try { text = await readFile(file, 'utf8') } catch (err) { throw new ConfigNotFoundError(file, { cause: err }) }
  const { raw, lineOf } = parseConfigText(text, file)
  const config = normalizeConfig(raw, file)
  if (opts.skipSecrets === true) return { config, secrets: undefined as unknown as LoadedConfig['secrets'] }
  const withLine = (key: string[], f: string): string => { const l = lineOf(key); return l === undefined ? f : `${f}:${l}` }
  let identity
  try { identity = await loadIdentity(config.node.identityPath) } catch (err) {
    if (err instanceof KeyFileError) throw new ConfigKeyFileError(withLine(['node', 'identity'], file), 'node.identity', config.node.identityPath, err.message.slice(config.node.identityPath.length + 2), { cause: err })
    throw err
  }
  let psk: Uint8Array | undefined
  if (config.mesh.pskPath !== undefined) {
    try { psk = await loadPsk(config.mesh.pskPath) } catch (err) {
      if (err instanceof KeyFileError) throw new ConfigKeyFileError(withLine(['mesh', 'psk'], file), 'mesh.psk', config.mesh.pskPath, err.message.slice(config.mesh.pskPath.length + 2), { cause: err })
      throw err
    }
  }
  if (config.mesh.peers.some(p => p.id === identity.peerId.toString())) {
    throw new ConfigInvalidError(file, [{ path: 'mesh.peers', message: 'lists this node\'s own peer ID', ...(lineOf(['mesh', 'peers']) !== undefined ? { line: lineOf(['mesh', 'peers']) as number } : {}) }])
  }
  const alerts = await loadAlertSecrets(config.alerts, (i, key) => withLine(['alerts', 'sinks', String(i), key], file))
  return { config, secrets: { privateKey: identity.privateKey, peerId: identity.peerId, ...(psk !== undefined ? { psk } : {}), alerts } }
}

/** Per alert sink name: the webhook's shared secret or the SMTP password, read from their files. */
export type AlertSecrets = Record<string, string>

/**
 * Reads the alert sinks' secret files (mode 0600, like the identity; one line, trailing newline
 * ignored). `where(i, key)` names the config line in errors. Also used when alerts reload.
 */
export async function loadAlertSecrets (alerts: AlertsConfig, where: (sinkIndex: number, key: string) => string = () => 'config'): Promise<AlertSecrets> {
  const out: AlertSecrets = {}
  for (const [i, s] of alerts.sinks.entries()) {
    const [key, path] = s.type === 'webhook' ? ['secretFile', s.secretFile] : ['passwordFile', s.passwordFile]
    if (path === undefined) continue
    let text
    try { text = (await readSecretText(path)).replace(/\r?\n$/, '') } catch (err) {
      if (err instanceof KeyFileError) throw new ConfigKeyFileError(where(i, key), `alerts.sinks[${i}].${key}`, path, err.message.slice(path.length + 2), { cause: err })
      throw err
    }
    if (text.length === 0) throw new ConfigKeyFileError(where(i, key), `alerts.sinks[${i}].${key}`, path, 'empty')
    out[s.name] = text
  }
  return out
}
