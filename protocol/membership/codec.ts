/**
 * Binary codec for SwimMessage. Layout (all integers big-endian or unsigned LEB128 varints):
 *
 *   u8 version | u8 type | u32 seq | varint incarnation | body | u8 count | count × update
 *   ping, ack : u8 flags (bit 0: claim) [u8 state, varint incarnation]
 *   pingReq   : id target | u8 flags (bit 0: claim) [claim] | varint timeoutMs
 *   nack      : (empty)
 *   gossip    : (empty)
 *   update    : u8 kind | u8 flags (bit 0: from) | id | varint incarnation [| id from]
 *   id        : u8 length (1..128) | UTF-8 bytes
 *
 * The decoder trusts nothing: the size limit is checked before anything else, every read is
 * bounds-checked, varints are canonical and capped at 2^53-1, reserved flag bits must be zero.
 * Update kinds this version does not know are skipped (the layout does not depend on the kind),
 * so a later version can append kinds without breaking older peers.
 */
import { BoundedReader } from '../common/wire-reader.ts'
import { WireWriter } from '../common/wire-writer.ts'
import {
  MAX_ID_BYTES, MAX_MESSAGE_BYTES, MAX_UPDATES, MEMBERSHIP_WIRE_VERSION, MESSAGE_TYPE_WIRE, UPDATE_KIND_WIRE
} from './messages.ts'
import type { Ack, Claim, MemberState, Ping, PingReq, SwimMessage, Update } from './messages.ts'
import {
  MembershipBadEnumError, MembershipBadFlagsError, MembershipBadIdError, MembershipBadVarintError,
  MembershipBadVersionError, MembershipEncodeError, MembershipMessageTooLargeError, MembershipTooManyUpdatesError,
  MembershipTrailingBytesError, MembershipTruncatedError, MembershipUnknownTypeError
} from './errors.ts'

const FLAG_PRESENT = 0x01
const utf8Strict = new TextDecoder('utf-8', { fatal: true })

const STATE_BY_WIRE = new Map<number, MemberState>(
  (Object.entries(UPDATE_KIND_WIRE) as Array<[MemberState, number]>).map(([k, v]) => [v, k])
)

// ---------------------------------------------------------------- encode

/** The shared writer (protocol/common) with this protocol's error, size cap, IDs and claims. */
class Writer extends WireWriter {
  constructor () {
    super('', { error: (message) => new MembershipEncodeError(message), initialBytes: 256, maxBytes: MAX_MESSAGE_BYTES })
  }

  id (s: string, what: string): void {
    this.string(s, what, { maxBytes: MAX_ID_BYTES, prefix: 'u8', allowNul: true })
  }

  claim (c: Claim | undefined, what: string): void {
    if (c === undefined) { this.u8(0); return }
    const wire = UPDATE_KIND_WIRE[c.state]
    if (wire === undefined) throw new MembershipEncodeError(`${what}.state is invalid`)
    this.u8(FLAG_PRESENT)
    this.u8(wire)
    this.varint(c.incarnation, `${what}.incarnation`)
  }

  /** The message in a buffer of its own. */
  done (): Uint8Array { return this.finish().slice() }
}

/** Fields every message carries ahead of its body. */
interface Head { seq: number, incarnation: number }

/** One message type's body: its encoder and decoder side by side. */
interface BodyCodec<M extends SwimMessage> {
  encode: (w: Writer, msg: M) => void
  decode: (r: Reader, head: Head) => M
}

type BodyCodecs = { [K in SwimMessage['type']]: BodyCodec<Extract<SwimMessage, { type: K }>> }

const BODIES: BodyCodecs = {
  ping: {
    encode: (w, msg) => { w.claim(msg.target, 'target') },
    decode: (r, head) => {
      const msg: Ping = { type: 'ping', ...head, piggyback: [] }
      const target = r.claim('target')
      if (target !== undefined) msg.target = target
      return msg
    }
  },
  ack: {
    encode: (w, msg) => { w.claim(msg.target, 'target') },
    decode: (r, head) => {
      const msg: Ack = { type: 'ack', ...head, piggyback: [] }
      const target = r.claim('target')
      if (target !== undefined) msg.target = target
      return msg
    }
  },
  pingReq: {
    encode: (w, msg) => {
      w.id(msg.target, 'target')
      w.claim(msg.claim, 'claim')
      w.u32(msg.timeoutMs, 'timeoutMs')
    },
    decode: (r, head) => {
      const target = r.id('target')
      const claim = r.claim('claim')
      const timeoutMs = r.u32('timeoutMs')
      const msg: PingReq = { type: 'pingReq', ...head, target, timeoutMs, piggyback: [] }
      if (claim !== undefined) msg.claim = claim
      return msg
    }
  },
  nack: {
    encode: () => {},
    decode: (_r, head) => ({ type: 'nack', ...head, piggyback: [] })
  },
  gossip: {
    encode: () => {},
    decode: (_r, head) => ({ type: 'gossip', ...head, piggyback: [] })
  }
}

const TYPE_BY_WIRE = new Map<number, SwimMessage['type']>(
  (Object.entries(MESSAGE_TYPE_WIRE) as Array<[SwimMessage['type'], number]>).map(([k, v]) => [v, k])
)

function bodyCodec<K extends SwimMessage['type']> (type: K): BodyCodec<Extract<SwimMessage, { type: K }>> {
  return BODIES[type]
}

/** Encodes a message; throws MembershipEncodeError when it breaks a wire limit. */
export function encodeSwimMessage (msg: SwimMessage): Uint8Array {
  const w = new Writer()
  w.u8(MEMBERSHIP_WIRE_VERSION)
  const type = MESSAGE_TYPE_WIRE[msg.type]
  if (type === undefined) throw new MembershipEncodeError('unknown message type')
  w.u8(type)
  w.u32(msg.seq, 'seq')
  w.varint(msg.incarnation, 'incarnation')
  ;(bodyCodec(msg.type) as BodyCodec<SwimMessage>).encode(w, msg)
  const updates = msg.piggyback
  if (updates.length > MAX_UPDATES) throw new MembershipEncodeError(`at most ${MAX_UPDATES} piggybacked updates`)
  w.u8(updates.length)
  for (const u of updates) {
    const kind = UPDATE_KIND_WIRE[u.kind]
    if (kind === undefined) throw new MembershipEncodeError('update kind is invalid')
    w.u8(kind)
    w.u8(u.from === undefined ? 0 : FLAG_PRESENT)
    w.id(u.id, 'update.id')
    w.varint(u.incarnation, 'update.incarnation')
    if (u.from !== undefined) w.id(u.from, 'update.from')
  }
  return w.done()
}

// ---------------------------------------------------------------- decode

/** The shared bounded reader with this protocol's errors; varints, IDs and claims on top. */
class Reader {
  private readonly r: BoundedReader

  constructor (buf: Uint8Array) {
    this.r = new BoundedReader(buf, 'membership message', {
      malformed: (message) => new MembershipTruncatedError(message),
      limit: (message) => new MembershipTruncatedError(message)
    })
  }

  get remaining (): number { return this.r.remaining }
  u8 (what: string): number { return this.r.u8(what) }
  u32 (what: string): number { return this.r.u32(what) }

  varint (what: string): number {
    let value = 0
    let scale = 1
    for (let i = 0; i < 8; i++) {
      const b = this.u8(what)
      value += (b & 0x7f) * scale
      if ((b & 0x80) === 0) {
        if (i > 0 && b === 0) throw new MembershipBadVarintError(what) // overlong encoding
        if (!Number.isSafeInteger(value)) throw new MembershipBadVarintError(what)
        return value
      }
      scale *= 0x80
    }
    throw new MembershipBadVarintError(what)
  }

  flags (what: string): boolean {
    const f = this.u8(`${what} flags`)
    if ((f & ~FLAG_PRESENT) !== 0) throw new MembershipBadFlagsError(what, f)
    return f === FLAG_PRESENT
  }

  id (what: string): string {
    const len = this.u8(`${what} length`)
    if (len < 1 || len > MAX_ID_BYTES) throw new MembershipBadIdError(what)
    const bytes = this.r.bytes(len, what)
    try {
      return utf8Strict.decode(bytes)
    } catch (err) {
      throw new MembershipBadIdError(what)
    }
  }

  claim (what: string): Claim | undefined {
    if (!this.flags(what)) return undefined
    const wire = this.u8(`${what} state`)
    const state = STATE_BY_WIRE.get(wire)
    if (state === undefined) throw new MembershipBadEnumError(`${what} state`, wire)
    return { state, incarnation: this.varint(`${what} incarnation`) }
  }
}

/** Decodes one message; throws a MembershipDecodeError subclass on anything malformed. */
export function decodeSwimMessage (bytes: Uint8Array): SwimMessage {
  if (bytes.length > MAX_MESSAGE_BYTES) throw new MembershipMessageTooLargeError(bytes.length, MAX_MESSAGE_BYTES)
  const r = new Reader(bytes)
  const version = r.u8('version')
  if (version !== MEMBERSHIP_WIRE_VERSION) throw new MembershipBadVersionError(version)
  const type = r.u8('type')
  const seq = r.u32('seq')
  const incarnation = r.varint('incarnation')
  const name = TYPE_BY_WIRE.get(type)
  if (name === undefined) throw new MembershipUnknownTypeError(type)
  const msg = bodyCodec(name).decode(r, { seq, incarnation })
  const count = r.u8('update count')
  if (count > MAX_UPDATES) throw new MembershipTooManyUpdatesError(count, MAX_UPDATES)
  for (let i = 0; i < count; i++) {
    const kindWire = r.u8('update kind')
    const hasFrom = r.flags('update')
    const id = r.id('update id')
    const inc = r.varint('update incarnation')
    const from = hasFrom ? r.id('update from') : undefined
    const kind = STATE_BY_WIRE.get(kindWire)
    if (kind === undefined) continue // a kind appended by a newer version: skip it
    const u: Update = { kind, id, incarnation: inc }
    if (from !== undefined) u.from = from
    msg.piggyback.push(u)
  }
  if (r.remaining !== 0) throw new MembershipTrailingBytesError(r.remaining)
  return msg
}
