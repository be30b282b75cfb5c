/**
 * Encode/decode of status summaries. JSON checked by a strict schema with bounds on every field
 * and list: a peer's bytes are hostile, and a message that does not fit is refused whole with a
 * StatusSummaryDecodeError (never a partial summary). The encoder trims lists to the same
 * bounds, so what we send always decodes.
 */
import { z } from 'zod'
import { NODE_NAME_RE, VM_NAME_RE } from '../../common/names.ts'
import { StatusSummaryDecodeError } from './errors.ts'
import { STATUS_SUMMARY_MAX_MEMBERS, STATUS_SUMMARY_MAX_MESSAGE_BYTES, STATUS_SUMMARY_MAX_TARGETS, STATUS_SUMMARY_MAX_VMS } from './ids.ts'
import type { StatusSummaryMessage } from './types.ts'

const nodeName = z.string().regex(NODE_NAME_RE)
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const ms = z.number().min(0).max(1e13)

const schema = z.strictObject({
  v: z.literal(1),
  node: nodeName,
  role: z.enum(['host', 'witness']),
  seq: count,
  atWallMs: ms,
  uptimeMs: ms,
  want: z.boolean().optional(),
  members: z.array(z.strictObject({
    name: nodeName,
    state: z.enum(['alive', 'suspect', 'dead']),
    connected: z.boolean(),
    sinceMs: ms
  })).max(STATUS_SUMMARY_MAX_MEMBERS),
  vms: z.array(z.strictObject({
    name: z.string().regex(VM_NAME_RE),
    owner: nodeName.nullable(),
    epoch: count,
    runningHere: z.boolean(),
    generation: count,
    changeSource: z.enum(['hash-scan', 'told', 'qemu-bitmap']).nullable(),
    rpoBoundMs: ms.nullable(),
    rpoTargetMs: ms.optional(),
    targets: z.array(z.strictObject({
      node: nodeName,
      state: z.enum(['seeding', 'in-sync', 'behind', 'disconnected', 'error']),
      ackedGeneration: count,
      lagMs: ms.nullable(),
      rpoMs: ms.nullable(),
      bytesPending: count,
      rateBytesPerSec: z.number().min(0).max(1e15).nullable(),
      seedProgress: z.number().min(0).max(1).nullable()
    })).max(STATUS_SUMMARY_MAX_TARGETS),
    replica: z.strictObject({
      from: nodeName,
      appliedGeneration: count,
      consistentGeneration: count.nullable(),
      seeding: z.boolean()
    }).nullable()
  })).max(STATUS_SUMMARY_MAX_VMS)
})

export function encodeStatusSummary (msg: StatusSummaryMessage): Uint8Array {
  const trimmed: StatusSummaryMessage = {
    ...msg,
    members: msg.members.slice(0, STATUS_SUMMARY_MAX_MEMBERS),
    vms: msg.vms.slice(0, STATUS_SUMMARY_MAX_VMS).map(v => ({ ...v, targets: v.targets.slice(0, STATUS_SUMMARY_MAX_TARGETS) }))
  }
  const bytes = new TextEncoder().encode(JSON.stringify(trimmed))
  if (bytes.byteLength > STATUS_SUMMARY_MAX_MESSAGE_BYTES) throw new RangeError(`status summary of ${bytes.byteLength} bytes exceeds ${STATUS_SUMMARY_MAX_MESSAGE_BYTES}`)
  return bytes
}

export function decodeStatusSummary (bytes: Uint8Array): StatusSummaryMessage {
  if (bytes.byteLength > STATUS_SUMMARY_MAX_MESSAGE_BYTES) throw new StatusSummaryDecodeError(`${bytes.byteLength} bytes exceeds ${STATUS_SUMMARY_MAX_MESSAGE_BYTES}`)
  let doc: unknown
  try { doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) } catch (err) { throw new StatusSummaryDecodeError('not UTF-8 JSON', { cause: err }) }
  const r = schema.safeParse(doc)
  if (!r.success) throw new StatusSummaryDecodeError(r.error.issues.slice(0, 3).map(i => `${i.path.join('.')}: ${i.message}`).join('; '))
  return r.data
}
