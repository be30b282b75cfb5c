/**
 * The config file's schema. The raw YAML is validated once, strictly (unknown keys are errors:
 * a typo must not silently fall back to a default), then normalized: units turned into numbers
 * (`limitBytesPerSec`, `blockSizeBytes`, `...Ms`), profiles expanded, paths left relative for
 * load.ts to resolve. Cross-field rules (unique names and IDs, replicateTo naming real hosts)
 * live in `superRefine` so that every problem is reported with its key path in one pass.
 */
import { z } from 'zod'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { parseDuration, parseRate, parseSize } from './units.ts'
import { NODE_NAME_RE, VM_NAME_RE } from '../common/names.ts'
import { PROFILES, detectorTimingProblems, ownershipTimingProblems, resolveOwnership } from './profiles.ts'
import { BLOCK_SIZE_RULE, DEFAULT_BLOCK_SIZE, isValidBlockSize } from '../common/block-size.ts'

const name = z.string().regex(NODE_NAME_RE, 'must be 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit')
export { VM_NAME_RE }
const vmName = z.string().regex(VM_NAME_RE, 'must be 1-63 letters, digits, spaces, ".", "_", "-", "(" or ")", starting with a letter or digit and not ending with a space or "."')

const peerIdString = z.string().refine(s => { try { peerIdFromString(s); return true } catch { return false } }, 'not a valid libp2p peer ID')

const multiaddrString = z.string().refine(s => {
  try { const ma = multiaddr(s); return ma.toString().length > 0 && /\/tcp\/\d+/.test(ma.toString()) } catch { return false }
}, 'not a valid TCP multiaddr (e.g. /ip4/192.0.2.10/tcp/7400)')

const hostPort = z.string().refine(s => parseHostPort(s) !== undefined, 'must be HOST:PORT (e.g. 127.0.0.1:7401)')

const rate = z.union([z.string(), z.number()]).refine(v => parseRate(v) !== undefined, 'not a rate (e.g. 100Mbit, 20MB, unlimited)').transform(v => parseRate(v) as number)
const size = z.union([z.string(), z.number()]).refine(v => parseSize(v) !== undefined, 'not a size (e.g. 64KiB, 4MiB)').transform(v => parseSize(v) as number)
const duration = z.union([z.string(), z.number()]).refine(v => parseDuration(v) !== undefined, 'not a duration (e.g. 500ms, 30s, 2h)').transform(v => parseDuration(v) as number)
const posInt = z.number().int().positive()

export function parseHostPort (s: string): { host: string, port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s)
  if (m == null) return undefined
  const port = Number(m[2])
  if (port < 0 || port > 65535) return undefined
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port }
}

const role = z.enum(['host', 'witness'])

const detectorOverrides = z.strictObject({
  probeIntervalMs: posInt.optional(),
  probeTimeoutMs: posInt.optional(),
  indirectProbes: z.number().int().min(0).max(16).optional(),
  suspicionMinMs: posInt.optional(),
  suspicionMaxMs: posInt.optional(),
  awarenessMax: z.number().int().min(0).max(64).optional(),
  retransmitMult: z.number().int().min(1).max(16).optional(),
  gossipPerMessage: z.number().int().min(1).max(64).optional(),
  suspicionConfirmations: z.number().int().min(0).max(16).optional(),
  pushFanout: z.number().int().min(0).max(16).optional()
})

const ownershipOverrides = z.strictObject({
  renewMs: posInt.optional(),
  leaseMs: posInt.optional(),
  fenceMs: posInt.optional(),
  driftRatio: z.number().min(0).max(0.2).optional(),
  electionStaggerMs: z.number().int().min(0).optional(),
  electionTimeoutMs: posInt.optional(),
  electionRetryMs: z.number().int().min(0).optional(),
  electionJitterMs: z.number().int().min(0).optional(),
  startRetryMs: z.number().int().min(0).optional(),
  startCoalesceMs: z.number().int().min(0).optional(),
  reportIntervalMs: posInt.optional(),
  plannedGraceMs: z.number().int().min(0).optional(),
  operatorTimeoutMs: posInt.optional(),
  maxConcurrentStarts: posInt.optional()
})

const peer = z.strictObject({
  name,
  id: peerIdString,
  /** empty for a peer behind NAT: it dials in, or is reached through `mesh.relay.via` */
  addrs: z.array(multiaddrString).default([]),
  role: role.default('host'),
  limit: rate.optional(),
  /** The peer's site (`vmesh failover --site`). */
  site: name.optional()
})

/**
 * What this host can hold for VMs. Either dimension left out is asked of the hypervisor
 * (/proc/meminfo and the CPU count for qemu/command, `virsh nodeinfo`, Hyper-V `Get-VMHost`);
 * `reserveMemoryMiB` is kept back for the host itself either way.
 */
const capacity = z.strictObject({
  memoryMiB: posInt.optional(),
  vcpus: posInt.optional(),
  reserveMemoryMiB: z.number().int().min(0).default(0)
})

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']

/** "mon-fri", "sat,sun", "daily" → weekday numbers (0 = Sunday). */
export function parseDays (s: string): number[] | undefined {
  const t = s.trim().toLowerCase()
  if (t === 'daily' || t === 'all' || t === '*') return [0, 1, 2, 3, 4, 5, 6]
  const out = new Set<number>()
  for (const part of t.split(',')) {
    const [a, b] = part.trim().split('-')
    const ia = DAYS.indexOf(a ?? '')
    if (ia < 0) return undefined
    if (b === undefined) { out.add(ia); continue }
    const ib = DAYS.indexOf(b)
    if (ib < 0) return undefined
    for (let d = ia; ; d = (d + 1) % 7) { out.add(d); if (d === ib) break }
  }
  return [...out].sort()
}

function parseClock (s: string): number | undefined {
  const m = /^(\d{1,2}):(\d{2})$/.exec(s.trim())
  if (m == null) return undefined
  const h = Number(m[1]); const mi = Number(m[2])
  if (h > 24 || mi > 59 || (h === 24 && mi !== 0)) return undefined
  return h * 60 + mi
}

const scheduleEntry = z.strictObject({
  days: z.string().refine(s => parseDays(s) !== undefined, 'days must look like "mon-fri", "sat,sun" or "daily"'),
  from: z.string().refine(s => parseClock(s) !== undefined, 'from must be HH:MM'),
  to: z.string().refine(s => parseClock(s) !== undefined, 'to must be HH:MM'),
  limit: rate
}).transform(e => ({ days: parseDays(e.days) as number[], fromMinute: parseClock(e.from) as number, toMinute: parseClock(e.to) as number, limitBytesPerSec: e.limit }))

const recoveryPoints = z.strictObject({
  count: z.number().int().min(0).max(10_000).default(24),
  keepAllWithin: duration.default(3_600_000),
  hourlyBeyond: z.boolean().default(true)
})

export const vmSchema = z.strictObject({
  name: vmName,
  disks: z.array(z.string().min(1)).default([]),
  files: z.array(z.string().min(1)).default([]),
  replicateTo: z.array(name).default([]),
  failover: z.enum(['auto', 'manual']).default('auto'),
  /** Higher gets room first when hosts are short of it (and starts first among equal startOrder). */
  priority: z.number().int().min(-1e6).max(1e6).default(0),
  startOrder: z.number().int().min(-1e6).max(1e6).default(0),
  /** Memory the VM needs where it runs; counted against each host's capacity. */
  memoryMiB: posInt.optional(),
  vcpus: posInt.optional(),
  /** VMs (anywhere in the mesh) that must run before this one starts. */
  startAfter: z.array(vmName).max(64).default([]),
  /** How long a start waits for `startAfter`, then starts anyway with a warning. */
  startAfterTimeout: duration.default(120_000),
  blockSize: size.refine(isValidBlockSize, `blockSize must be ${BLOCK_SIZE_RULE}`).default(DEFAULT_BLOCK_SIZE),
  scanInterval: duration.default(1000),
  /**
   * Shortest time between two change rounds of a disk: writes that come sooner wait for the
   * next round and go with it. Each round costs the source the same whatever it carries (QMP,
   * dirty maps, a generation and its durable ack), so a longer gap is less CPU per written byte
   * and a later replica. Default: 250 ms for the hash scan, 500 ms for told sources (QEMU
   * bitmaps, Hyper-V RCT): on the capture bench 500 ms keeps write → durable p99 under 1 s.
   */
  captureGap: duration.optional(),
  quietBudget: duration.default(2000),
  recoveryPoints: recoveryPoints.default({ count: 24, keepAllWithin: 3_600_000, hourlyBeyond: true }),
  seed: z.enum(['full', 'existing']).default('full'),
  limit: rate.optional(),
  verifyInterval: duration.optional(),
  /**
   * How changes are found: `scan` (hash scan), `qemu-bitmap` (QEMU dirty bitmaps over QMP),
   * `rct` (Hyper-V recovery checkpoints + resilient change tracking; `hypervisor.driver: hyperv`)
   * or `auto` (bitmaps when `qmp` is set or the `qemu` driver runs VMs here, else the scan).
   * @default 'auto'
   */
  changeSource: z.enum(['auto', 'scan', 'qemu-bitmap', 'rct']).default('auto'),
  /** QMP socket of a VM started outside vmesh (for `qemu-bitmap`). */
  qmp: z.string().min(1).optional(),
  /**
   * With QEMU dirty bitmaps on a one-disk VM: read each generation from a fleecing point
   * (copy-before-write into a scratch image under the data folder), so every generation is the
   * disk at one instant — a recovery point. `false`: read the live file (fuzzy generations, no
   * scratch space, no copy-before-write I/O).
   * @default true
   */
  fleece: z.boolean().default(true),
  /**
   * With `fleece`: a round whose changed blocks fit in this many bytes takes its point by
   * reading them while no guest write completes (kept in memory, no copy-before-write I/O); a
   * larger change set gets a fleecing job. `0`: every point is a fleecing job.
   * @default 16MiB
   */
  pointCopyBudget: size.default(16 * 1024 * 1024),
  /** The VM's recovery point objective: a target whose RPO exceeds it raises an `rpo-breach` alert. @default 60 s */
  rpo: duration.default(60_000)
})

const commandDriver = z.strictObject({
  start: z.string().min(1),
  stop: z.string().min(1),
  status: z.string().min(1),
  list: z.string().min(1).optional(),
  /** Test failover (`vmesh failover --test`): start/stop/status an isolated clone. */
  testStart: z.string().min(1).optional(),
  testStop: z.string().min(1).optional(),
  testStatus: z.string().min(1).optional(),
  timeout: duration.default(60_000)
})

const hypervisor = z.strictObject({
  driver: z.enum(['hyperv', 'libvirt', 'qemu', 'command', 'none']).default('none'),
  command: commandDriver.optional(),
  qemu: z.strictObject({
    binary: z.string().default('qemu-system-x86_64'),
    args: z.array(z.string()).default([]),
    memoryMiB: posInt.default(256)
  }).optional(),
  libvirt: z.strictObject({ uri: z.string().default('qemu:///system'), virsh: z.string().default('virsh') }).optional(),
  hyperv: z.strictObject({ powershell: z.string().default('powershell.exe'), replicaDir: z.string().optional() }).optional(),
  maxConcurrentStarts: posInt.default(2)
}).superRefine((h, ctx) => {
  if (h.driver === 'command' && h.command === undefined) ctx.addIssue({ code: 'custom', path: ['command'], message: 'driver "command" needs hypervisor.command.start/stop/status' })
})

const sinkName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be 1-63 letters, digits, ".", "_" or "-"')
/** Delivery settings every alert sink has (queue bound, retry backoff, one attempt's timeout). */
const sinkDelivery = {
  name: sinkName,
  queue: z.number().int().min(1).max(100_000).default(1000),
  retryMin: duration.default(1000),
  retryMax: duration.default(300_000),
  timeout: duration.default(10_000)
}
const alertSink = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('webhook'),
    ...sinkDelivery,
    url: z.string().url().refine(u => /^https?:\/\//.test(u), 'must be an http:// or https:// URL'),
    /** File holding the shared secret of the HMAC-SHA256 signature header. */
    secretFile: z.string().min(1).optional()
  }),
  z.strictObject({
    type: z.literal('email'),
    ...sinkDelivery,
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(587),
    /** STARTTLS is required (a server that does not offer it is refused); `false` only for a trusted local relay. */
    starttls: z.boolean().default(true),
    /** PEM file of the CA (or self-signed certificate) the server's certificate must chain to; default: the system CAs. */
    caFile: z.string().min(1).optional(),
    user: z.string().min(1).optional(),
    passwordFile: z.string().min(1).optional(),
    from: z.string().email(),
    to: z.array(z.string().email()).min(1)
  })
]).transform(({ queue, retryMin, retryMax, timeout, ...s }) => ({ ...s, queueMax: queue, retryMinMs: retryMin, retryMaxMs: retryMax, timeoutMs: timeout }))

/** Alerts: where they go and the thresholds of the conditions that are not per VM. */
export const alertsSchema = z.strictObject({
  sinks: z.array(alertSink).default([]),
  /** Free space of the data folder's file system below this share: `disk-low`. */
  diskLowPercent: z.number().min(0).max(100).default(10),
  /** ... below this share: `disk-full`. */
  diskFullPercent: z.number().min(0).max(100).default(2),
  /** A target with bytes pending whose acked generation has not moved for this long: `replication-stalled`. */
  stalledAfter: duration.default(300_000),
  /** A condition must have been gone this long before its recovery notice (no flapping). */
  clearAfter: duration.default(10_000),
  /** How often conditions are evaluated (membership changes are evaluated at once). */
  evaluateInterval: duration.default(1000)
}).transform(a => ({ sinks: a.sinks, diskLowPercent: a.diskLowPercent, diskFullPercent: a.diskFullPercent, stalledAfterMs: a.stalledAfter, clearAfterMs: a.clearAfter, evaluateIntervalMs: a.evaluateInterval }))
export type AlertsConfig = z.output<typeof alertsSchema>

export const rawConfigSchema = z.strictObject({
  node: z.strictObject({
    name,
    identity: z.string().min(1).default('identity.key'),
    listen: z.array(multiaddrString).min(1).default(['/ip4/0.0.0.0/tcp/7400']),
    dataDir: z.string().min(1).default('data'),
    api: hostPort.default('127.0.0.1:7401'),
    role: role.default('host'),
    /** This node's site (`vmesh failover --site`). */
    site: name.optional(),
    capacity: capacity.optional()
  }),
  mesh: z.strictObject({
    profile: z.enum(['lan', 'wan']).default('lan'),
    psk: z.string().min(1).optional(),
    peers: z.array(peer).default([]),
    detector: detectorOverrides.default({}),
    dialBackoffMin: duration.default(250),
    dialBackoffMax: duration.default(10_000),
    /** NAT traversal: serve as a circuit relay, and/or reach peers through relays */
    relay: z.strictObject({
      serve: z.boolean().default(false),
      via: z.array(name).default([]),
      holePunch: z.boolean().default(true)
    }).default({ serve: false, via: [], holePunch: true })
  }).default({ profile: 'lan', peers: [], detector: {}, dialBackoffMin: 250, dialBackoffMax: 10_000, relay: { serve: false, via: [], holePunch: true } }),
  ownership: ownershipOverrides.default({}),
  hypervisor: hypervisor.default({ driver: 'none', maxConcurrentStarts: 2 }),
  vms: z.array(vmSchema).default([]),
  bandwidth: z.strictObject({
    limit: rate.default(Infinity),
    schedule: z.array(scheduleEntry).default([])
  }).default({ limit: Infinity, schedule: [] }),
  scan: z.strictObject({ budget: rate.default(Infinity) }).default({ budget: Infinity }),
  /**
   * The content index of a replica holder (`<dataDir>/content-index/`): blocks it already holds,
   * from any VM or generation, are copied there instead of crossing the wire (replication 1.2.0).
   * `maxEntries`: entries kept (one per distinct block); beyond it the oldest are evicted.
   * Opt-in (`enabled: true` on both ends): offering blocks by hash costs a LAN seed ~20 % (README).
   * @default { enabled: false, maxEntries: 2097152 } (≈ 128 GiB of distinct 64 KiB blocks, ≈ 140 MB on disk at 66 bytes an entry)
   */
  contentIndex: z.strictObject({
    enabled: z.boolean().default(false),
    maxEntries: z.number().int().min(1024).max(1_000_000_000).default(2_097_152)
  }).default({ enabled: false, maxEntries: 2_097_152 }),
  /**
   * The web dashboard. It is always served on `node.api` to loopback browsers; `listen` with
   * `tls` (PEM files) adds an HTTPS listener for browsers on other hosts.
   */
  dashboard: z.strictObject({
    listen: hostPort.optional(),
    tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
    /** Base URL `vmesh dashboard` prints for the TLS listener (e.g. behind a name). */
    publicUrl: z.string().regex(/^https:\/\/[^\s/]+(\/\S*)?$/, 'must be an https:// URL').optional(),
    /** How long a `vmesh dashboard` link may wait to be opened. @default 60s */
    loginTtl: duration.default(60_000),
    /** How long a browser session lasts. @default 12h */
    sessionTtl: duration.default(43_200_000)
  }).superRefine((d, ctx) => {
    if (d.listen !== undefined && d.tls === undefined) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'dashboard.listen serves other hosts and needs dashboard.tls (cert and key files)' })
    if (d.tls !== undefined && d.listen === undefined) ctx.addIssue({ code: 'custom', path: ['listen'], message: 'dashboard.tls needs dashboard.listen (HOST:PORT of the HTTPS listener)' })
  }).default({ loginTtl: 60_000, sessionTtl: 43_200_000 }),
  log: z.strictObject({ level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info') }).default({ level: 'info' }),
  alerts: alertsSchema.prefault({})
}).superRefine((c, ctx) => {
  const names = new Map<string, string>([[c.node.name, 'node.name']])
  const ids = new Map<string, string>()
  c.mesh.peers.forEach((p, i) => {
    const prev = names.get(p.name)
    if (prev !== undefined) ctx.addIssue({ code: 'custom', path: ['mesh', 'peers', i, 'name'], message: `duplicate name "${p.name}" (also ${prev})` })
    names.set(p.name, `mesh.peers[${i}].name`)
    const prevId = ids.get(p.id)
    if (prevId !== undefined) ctx.addIssue({ code: 'custom', path: ['mesh', 'peers', i, 'id'], message: `duplicate peer ID (also ${prevId})` })
    ids.set(p.id, `mesh.peers[${i}].id`)
  })
  if (c.node.role === 'witness' && c.vms.length > 0) ctx.addIssue({ code: 'custom', path: ['vms'], message: 'a witness holds no VMs' })
  const vmNames = new Set<string>()
  const paths = new Map<string, string>()
  c.vms.forEach((v, i) => {
    if (vmNames.has(v.name)) ctx.addIssue({ code: 'custom', path: ['vms', i, 'name'], message: `duplicate VM name "${v.name}"` })
    vmNames.add(v.name)
    if (v.disks.length + v.files.length === 0) ctx.addIssue({ code: 'custom', path: ['vms', i, 'disks'], message: 'a VM needs at least one disk or file' })
    for (const [kind, list] of [['disks', v.disks], ['files', v.files]] as const) {
      list.forEach((p, j) => {
        const prev = paths.get(p)
        if (prev !== undefined) ctx.addIssue({ code: 'custom', path: ['vms', i, kind, j], message: `path already listed at ${prev}` })
        paths.set(p, `vms[${i}].${kind}[${j}]`)
      })
    }
    v.replicateTo.forEach((t, j) => {
      const p = c.mesh.peers.find(x => x.name === t)
      if (t === c.node.name) ctx.addIssue({ code: 'custom', path: ['vms', i, 'replicateTo', j], message: 'a VM cannot replicate to its own node' })
      else if (p === undefined) ctx.addIssue({ code: 'custom', path: ['vms', i, 'replicateTo', j], message: `"${t}" is not a peer in mesh.peers` })
      else if (p.role === 'witness') ctx.addIssue({ code: 'custom', path: ['vms', i, 'replicateTo', j], message: `"${t}" is a witness and holds no replicas` })
    })
    if (v.changeSource === 'qemu-bitmap' && v.qmp === undefined && c.hypervisor.driver !== 'qemu') ctx.addIssue({ code: 'custom', path: ['vms', i, 'changeSource'], message: 'qemu-bitmap needs the VM\'s qmp socket or hypervisor.driver: qemu' })
    if (v.changeSource === 'rct' && c.hypervisor.driver !== 'hyperv') ctx.addIssue({ code: 'custom', path: ['vms', i, 'changeSource'], message: 'rct needs hypervisor.driver: hyperv' })
    v.startAfter.forEach((d, j) => {
      if (d === v.name) ctx.addIssue({ code: 'custom', path: ['vms', i, 'startAfter', j], message: 'a VM cannot start after itself' })
    })
    if (new Set(v.startAfter).size !== v.startAfter.length) ctx.addIssue({ code: 'custom', path: ['vms', i, 'startAfter'], message: 'a VM is named twice' })
    if (new Set(v.replicateTo).size !== v.replicateTo.length) ctx.addIssue({ code: 'custom', path: ['vms', i, 'replicateTo'], message: 'a peer is named twice' })
  })
  c.bandwidth.schedule.forEach((s, i) => {
    if (s.fromMinute >= s.toMinute) ctx.addIssue({ code: 'custom', path: ['bandwidth', 'schedule', i, 'to'], message: '"to" must be later than "from" (split windows that cross midnight in two)' })
  })
  c.mesh.relay.via.forEach((r, i) => {
    const p = c.mesh.peers.find(x => x.name === r)
    if (p === undefined) ctx.addIssue({ code: 'custom', path: ['mesh', 'relay', 'via', i], message: `"${r}" is not a peer in mesh.peers` })
    else if (p.addrs.length === 0) ctx.addIssue({ code: 'custom', path: ['mesh', 'relay', 'via', i], message: `relay "${r}" needs an address in mesh.peers (a relay must be reachable)` })
  })
  const sinkNames = new Set<string>()
  c.alerts.sinks.forEach((s, i) => {
    if (sinkNames.has(s.name)) ctx.addIssue({ code: 'custom', path: ['alerts', 'sinks', i, 'name'], message: `duplicate sink name "${s.name}"` })
    sinkNames.add(s.name)
    if (s.retryMinMs > s.retryMaxMs) ctx.addIssue({ code: 'custom', path: ['alerts', 'sinks', i, 'retryMin'], message: 'must not exceed retryMax' })
    if (s.type === 'email' && (s.user === undefined) !== (s.passwordFile === undefined)) ctx.addIssue({ code: 'custom', path: ['alerts', 'sinks', i, 'user'], message: 'user and passwordFile go together' })
  })
  if (c.alerts.diskFullPercent > c.alerts.diskLowPercent) ctx.addIssue({ code: 'custom', path: ['alerts', 'diskFullPercent'], message: 'must not exceed alerts.diskLowPercent' })
  if (c.mesh.dialBackoffMin > c.mesh.dialBackoffMax) ctx.addIssue({ code: 'custom', path: ['mesh', 'dialBackoffMin'], message: 'must not exceed mesh.dialBackoffMax' })
  // Timing overrides are checked against the profile they override: the relations between
  // the values (config/profiles.ts) must hold for what will actually run.
  const profile = PROFILES[c.mesh.profile]
  for (const p of detectorTimingProblems({ ...profile.detector, ...defined(c.mesh.detector) })) ctx.addIssue({ code: 'custom', path: ['mesh', 'detector', p.key], message: p.message })
  const { maxConcurrentStarts: _, ...own } = c.ownership
  for (const p of ownershipTimingProblems(resolveOwnership(profile.ownership, defined(own)))) ctx.addIssue({ code: 'custom', path: ['ownership', p.key], message: p.message })
})

/** The keys of `o` that are set (an absent override must not erase a profile value). */
export function defined<T extends object> (o: T): { [K in keyof T]-?: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as { [K in keyof T]-?: Exclude<T[K], undefined> }
}

export type RawConfig = z.output<typeof rawConfigSchema>
