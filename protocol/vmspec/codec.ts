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


const vmSpecsSchema = z.strictObject({
  v: z.literal(1),
  want: z.boolean().optional(),
  specs: z.array(z.strictObject({
    name: z.string().regex(VM_NAME_RE),
    home: z.string().regex(NODE_NAME_RE),
    replicateTo: z.array(z.string().regex(NODE_NAME_RE)).max(64),
    failover: z.enum(['auto', 'manual']),
    startOrder: z.number().int().min(-1e6).max(1e6),
    priority: z.number().int().min(-1e6).max(1e6)
  })).max(1000)
})

export function encodeVmSpecs (msg: VmSpecsMessage): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(msg))
}

export function decodeVmSpecs (bytes: Uint8Array): VmSpecsMessage {
  if (bytes.byteLength > VMSPEC_MAX_MESSAGE_BYTES) throw new VmSpecDecodeError(`${bytes.byteLength} bytes exceeds ${VMSPEC_MAX_MESSAGE_BYTES}`)
  let doc: unknown
  try { doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) } catch (err) { throw new VmSpecDecodeError('not UTF-8 JSON', { cause: err }) }
  const r = vmSpecsSchema.safeParse(doc)
  if (!r.success) throw new VmSpecDecodeError(r.error.issues.slice(0, 3).map(i => `${i.path.join('.')}: ${i.message}`).join('; '))
  return r.data
}
