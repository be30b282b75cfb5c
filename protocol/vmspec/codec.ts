/**
 * Encode/decode of VM-spec announcements. JSON checked by a strict schema with bounds on every
 * field and list: a peer's bytes are hostile, and a message that does not fit is refused whole
 * with a VmSpecDecodeError (never a partial spec).
 */
import { z } from 'zod'
import { VmSpecDecodeError } from './errors.ts'
import { VMSPEC_MAX_MESSAGE_BYTES } from './ids.ts'
import type { VmSpecsMessage } from './types.ts'
import { NODE_NAME_RE, VM_NAME_RE } from '../../common/names.ts'


const v1Spec = {
  name: z.string().regex(VM_NAME_RE),
  home: z.string().regex(NODE_NAME_RE),
  replicateTo: z.array(z.string().regex(NODE_NAME_RE)).max(64),
  failover: z.enum(['auto', 'manual']),
  startOrder: z.number().int().min(-1e6).max(1e6),
  priority: z.number().int().min(-1e6).max(1e6)
}

/** Fields added in v2; append-only. */
const v2Spec = {
  ...v1Spec,
  memoryMiB: z.number().int().min(1).max(0xffff_fffe).optional(),
  vcpus: z.number().int().min(1).max(0xffff_fffe).optional(),
  startAfter: z.array(z.string().regex(VM_NAME_RE)).max(64).optional(),
  startAfterTimeoutMs: z.number().int().min(0).max(86_400_000).optional()
}

const vmSpecsSchema = z.union([
  z.strictObject({ v: z.literal(1), want: z.boolean().optional(), specs: z.array(z.strictObject(v1Spec)).max(1000) }),
  z.strictObject({ v: z.literal(2), want: z.boolean().optional(), specs: z.array(z.strictObject(v2Spec)).max(1000) })
])

const V2_KEYS = ['memoryMiB', 'vcpus', 'startAfter', 'startAfterTimeoutMs'] as const

/** Encodes as v1 when no spec uses a v2 field, so an older peer still learns the policies. */
export function encodeVmSpecs (msg: VmSpecsMessage): Uint8Array {
  const v2 = msg.specs.some(s => V2_KEYS.some(k => s[k] !== undefined))
  return new TextEncoder().encode(JSON.stringify({ ...msg, v: v2 ? 2 : 1 }))
}

export function decodeVmSpecs (bytes: Uint8Array): VmSpecsMessage {
  if (bytes.byteLength > VMSPEC_MAX_MESSAGE_BYTES) throw new VmSpecDecodeError(`${bytes.byteLength} bytes exceeds ${VMSPEC_MAX_MESSAGE_BYTES}`)
  let doc: unknown
  try { doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) } catch (err) { throw new VmSpecDecodeError('not UTF-8 JSON', { cause: err }) }
  const r = vmSpecsSchema.safeParse(doc)
  if (!r.success) throw new VmSpecDecodeError(r.error.issues.slice(0, 3).map(i => `${i.path.join('.')}: ${i.message}`).join('; '))
  return r.data as VmSpecsMessage
}
