/**
 * Binary codec for ElectionMessage. Layout (integers big-endian, fixed width):
 *
 *   u8 version | u8 type | name vm | body
 *   renew, renewAck : u64 epoch | u64 seq
 *   renewNack       : u64 epoch | u64 seq | u8 reason | u64 currentEpoch | optName owner
 *   requestVote     : u64 epoch | u64 seq | name candidate | gen
 *   vote            : u64 epoch | u64 seq | name candidate | u8 flags (bit 0: granted) | u8 reason
 *                     | u64 currentEpoch | optName owner | u32 retryAfterMs
 *   owner           : u64 epoch | name owner
 *   release         : u64 epoch | name to | gen
 *   replicaReport   : u8 flags (bit 0: present) [gen]
 *   takeover        : u8 flags (bit 0: force)
 *   room            : u8 flags (bit 0: fits) | u32 capMemoryMiB | u32 capVcpus | u32 freeMemoryMiB | u32 freeVcpus
 *                     (u32 max: not counted; free never above capacity)
 *   runState        : u64 epoch | u8 flags (bit 0: running)
 *   gen             : u64 epoch | u64 generation
 *   name            : u8 length (1..128) | UTF-8 bytes;  optName: the same with length 0 allowed
 *
 * The decoder trusts nothing: the size limit is checked first, every read is bounds-checked,
 * u64 values above 2^53-1 are refused (they would lose precision), enums and flags must be
 * known values, `granted` must agree with the reason, and no bytes may follow the message.
 * Every decoding is canonical: re-encoding a decoded message gives back the same bytes.
 */
import { BoundedReader } from '../common/wire-reader.ts'
import { WireWriter } from '../common/wire-writer.ts'
import {
  ELECTION_WIRE_VERSION, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MESSAGE_TYPE_WIRE, NACK_REASON_WIRE, VOTE_REASON_WIRE
} from './messages.ts'
import type { ElectionMessage, GenerationRef, NackReason, VoteReason } from './messages.ts'
import {
  ElectionBadEnumError, ElectionBadFlagsError, ElectionBadIntegerError, ElectionBadNameError, ElectionBadVersionError,
  ElectionEncodeError, ElectionInconsistentError, ElectionMessageTooLargeError, ElectionTrailingBytesError,
  ElectionTruncatedError, ElectionUnknownTypeError
} from './errors.ts'

const FLAG_BIT0 = 0x01
const utf8Strict = new TextDecoder('utf-8', { fatal: true })

const VOTE_REASON_BY_WIRE = invert(VOTE_REASON_WIRE)
const NACK_REASON_BY_WIRE = invert(NACK_REASON_WIRE)

function invert<K extends string> (table: Record<K, number>): Map<number, K> {
  return new Map((Object.entries(table) as Array<[K, number]>).map(([k, v]) => [v, k]))
}

// ---------------------------------------------------------------- encode

/** The shared writer (protocol/common) with this protocol's error, size cap, names and generations. */
class Writer extends WireWriter {
  constructor () {
    super('', { error: (message) => new ElectionEncodeError(message), initialBytes: 128, maxBytes: MAX_MESSAGE_BYTES })
  }

  name (s: string, what: string, optional = false): void {
    this.string(s, what, { maxBytes: MAX_NAME_BYTES, minBytes: optional ? 0 : 1, prefix: 'u8', allowNul: true })
  }

  gen (g: GenerationRef, what: string): void {
    this.u64(g.epoch, `${what}.epoch`)
    this.u64(g.generation, `${what}.generation`)
  }

  /** The message in a buffer of its own. */
  done (): Uint8Array { return this.finish().slice() }
}

/** Encodes a message; throws ElectionEncodeError when it breaks a wire limit. */
export function encodeElectionMessage (msg: ElectionMessage): Uint8Array {
  const w = new Writer()
  w.u8(ELECTION_WIRE_VERSION)
  const type = MESSAGE_TYPE_WIRE[msg.type]
  if (type === undefined) throw new ElectionEncodeError('unknown message type')
  w.u8(type)
  w.name(msg.vm, 'vm')
  ;(BODIES[msg.type] as BodyCodec<ElectionMessage>).encode(w, msg)
  return w.done()
}

// ---------------------------------------------------------------- decode

/**
 * The shared bounded reader with this protocol's errors: a short read is a truncated message, a
 * u64 beyond 2^53 - 1 a bad integer; names are u8-length-prefixed UTF-8.
 */
class Reader {
  private readonly r: BoundedReader

  constructor (buf: Uint8Array) {
    this.r = new BoundedReader(buf, 'election message', {
      malformed: (message) => new ElectionTruncatedError(message),
      limit: (message) => new ElectionBadIntegerError(message)
    })
  }

  get remaining (): number { return this.r.remaining }
  u8 (what: string): number { return this.r.u8(what) }
  u32 (what: string): number { return this.r.u32(what) }
  u64 (what: string): number { return this.r.u64(what) }

  flag (what: string): boolean {
    const f = this.u8(`${what} flags`)
    if ((f & ~FLAG_BIT0) !== 0) throw new ElectionBadFlagsError(what, f)
    return f === FLAG_BIT0
  }

  name (what: string, optional = false): string {
    const len = this.u8(`${what} length`)
    if ((len === 0 && !optional) || len > MAX_NAME_BYTES) throw new ElectionBadNameError(what)
    const bytes = this.r.bytes(len, what)
    try {
      return utf8Strict.decode(bytes)
    } catch {
      throw new ElectionBadNameError(what)
    }
  }

  gen (what: string): GenerationRef {
    return { epoch: this.u64(`${what} epoch`), generation: this.u64(`${what} generation`) }
  }
}

function voteReason (wire: number): VoteReason {
  const r = VOTE_REASON_BY_WIRE.get(wire)
  if (r === undefined) throw new ElectionBadEnumError('vote reason', wire)
  return r
}

function nackReason (wire: number): NackReason {
  const r = NACK_REASON_BY_WIRE.get(wire)
  if (r === undefined) throw new ElectionBadEnumError('nack reason', wire)
  return r
}

// ---------------------------------------------------------------- bodies

/** One message type's body (after version, type and vm): its encoder and decoder side by side. */
interface BodyCodec<M extends ElectionMessage> {
  encode: (w: Writer, msg: M) => void
  decode: (r: Reader, vm: string) => M
}

type BodyCodecs = { [K in ElectionMessage['type']]: BodyCodec<Extract<ElectionMessage, { type: K }>> }

const BODIES: BodyCodecs = {
  renew: {
    encode: (w, msg) => { w.u64(msg.epoch, 'epoch'); w.u64(msg.seq, 'seq') },
    decode: (r, vm) => ({ type: 'renew', vm, epoch: r.u64('epoch'), seq: r.u64('seq') })
  },
  renewAck: {
    encode: (w, msg) => { w.u64(msg.epoch, 'epoch'); w.u64(msg.seq, 'seq') },
    decode: (r, vm) => ({ type: 'renewAck', vm, epoch: r.u64('epoch'), seq: r.u64('seq') })
  },
  renewNack: {
    encode: (w, msg) => {
      w.u64(msg.epoch, 'epoch')
      w.u64(msg.seq, 'seq')
      const reason = NACK_REASON_WIRE[msg.reason]
      if (reason === undefined) throw new ElectionEncodeError('nack reason is invalid')
      w.u8(reason)
      w.u64(msg.currentEpoch, 'currentEpoch')
      w.name(msg.owner, 'owner', true)
    },
    decode: (r, vm) => {
      const epoch = r.u64('epoch')
      const seq = r.u64('seq')
      const reason = nackReason(r.u8('reason'))
      const currentEpoch = r.u64('currentEpoch')
      const owner = r.name('owner', true)
      return { type: 'renewNack', vm, epoch, seq, reason, currentEpoch, owner }
    }
  },
  requestVote: {
    encode: (w, msg) => {
      w.u64(msg.epoch, 'epoch')
      w.u64(msg.seq, 'seq')
      w.name(msg.candidate, 'candidate')
      w.gen(msg.generation, 'generation')
    },
    decode: (r, vm) => {
      const epoch = r.u64('epoch')
      const seq = r.u64('seq')
      const candidate = r.name('candidate')
      const generation = r.gen('generation')
      return { type: 'requestVote', vm, epoch, seq, candidate, generation }
    }
  },
  vote: {
    encode: (w, msg) => {
      w.u64(msg.epoch, 'epoch')
      w.u64(msg.seq, 'seq')
      w.name(msg.candidate, 'candidate')
      const reason = VOTE_REASON_WIRE[msg.reason]
      if (reason === undefined) throw new ElectionEncodeError('vote reason is invalid')
      if (msg.granted !== (msg.reason === 'granted')) throw new ElectionEncodeError('granted must agree with reason')
      w.u8(msg.granted ? FLAG_BIT0 : 0)
      w.u8(reason)
      w.u64(msg.currentEpoch, 'currentEpoch')
      w.name(msg.owner, 'owner', true)
      w.u32(msg.retryAfterMs, 'retryAfterMs')
    },
    decode: (r, vm) => {
      const epoch = r.u64('epoch')
      const seq = r.u64('seq')
      const candidate = r.name('candidate')
      const granted = r.flag('vote')
      const reason = voteReason(r.u8('reason'))
      if (granted !== (reason === 'granted')) throw new ElectionInconsistentError('granted flag disagrees with reason')
      const currentEpoch = r.u64('currentEpoch')
      const owner = r.name('owner', true)
      const retryAfterMs = r.u32('retryAfterMs')
      return { type: 'vote', vm, epoch, seq, candidate, granted, reason, currentEpoch, owner, retryAfterMs }
    }
  },
  owner: {
    encode: (w, msg) => { w.u64(msg.epoch, 'epoch'); w.name(msg.owner, 'owner') },
    decode: (r, vm) => {
      const epoch = r.u64('epoch')
      return { type: 'owner', vm, epoch, owner: r.name('owner') }
    }
  },
  release: {
    encode: (w, msg) => { w.u64(msg.epoch, 'epoch'); w.name(msg.to, 'to'); w.gen(msg.generation, 'generation') },
    decode: (r, vm) => {
      const epoch = r.u64('epoch')
      const to = r.name('to')
      return { type: 'release', vm, epoch, to, generation: r.gen('generation') }
    }
  },
  replicaReport: {
    encode: (w, msg) => {
      if (msg.generation === null) {
        w.u8(0)
      } else {
        w.u8(FLAG_BIT0)
        w.gen(msg.generation, 'generation')
      }
    },
    decode: (r, vm) => {
      const present = r.flag('replicaReport')
      return { type: 'replicaReport', vm, generation: present ? r.gen('generation') : null }
    }
  },
  takeover: {
    encode: (w, msg) => { w.u8(msg.force ? FLAG_BIT0 : 0) },
    decode: (r, vm) => ({ type: 'takeover', vm, force: r.flag('takeover') })
  },
  room: {
    encode: (w, msg) => {
      if (msg.free.memoryMiB > msg.capacity.memoryMiB || msg.free.vcpus > msg.capacity.vcpus) throw new ElectionEncodeError('free room above capacity')
      w.u8(msg.fits ? FLAG_BIT0 : 0)
      w.u32(msg.capacity.memoryMiB, 'capacity.memoryMiB')
      w.u32(msg.capacity.vcpus, 'capacity.vcpus')
      w.u32(msg.free.memoryMiB, 'free.memoryMiB')
      w.u32(msg.free.vcpus, 'free.vcpus')
    },
    decode: (r, vm) => {
      const fits = r.flag('room')
      const capacity = { memoryMiB: r.u32('capacity.memoryMiB'), vcpus: r.u32('capacity.vcpus') }
      const free = { memoryMiB: r.u32('free.memoryMiB'), vcpus: r.u32('free.vcpus') }
      if (free.memoryMiB > capacity.memoryMiB || free.vcpus > capacity.vcpus) throw new ElectionInconsistentError('free room above capacity')
      return { type: 'room', vm, fits, capacity, free }
    }
  },
  runState: {
    encode: (w, msg) => { w.u64(msg.epoch, 'epoch'); w.u8(msg.running ? FLAG_BIT0 : 0) },
    decode: (r, vm) => {
      const epoch = r.u64('epoch')
      return { type: 'runState', vm, epoch, running: r.flag('runState') }
    }
  }
}

const TYPE_BY_WIRE = invert(MESSAGE_TYPE_WIRE as Record<ElectionMessage['type'], number>)

/** Decodes one message; throws an ElectionDecodeError subclass on anything malformed. */
export function decodeElectionMessage (bytes: Uint8Array): ElectionMessage {
  if (bytes.length > MAX_MESSAGE_BYTES) throw new ElectionMessageTooLargeError(bytes.length, MAX_MESSAGE_BYTES)
  const r = new Reader(bytes)
  const version = r.u8('version')
  if (version !== ELECTION_WIRE_VERSION) throw new ElectionBadVersionError(version)
  const type = r.u8('type')
  const name = TYPE_BY_WIRE.get(type)
  if (name === undefined) throw new ElectionUnknownTypeError(type)
  const vm = r.name('vm')
  const msg = BODIES[name].decode(r, vm)
  if (r.remaining !== 0) throw new ElectionTrailingBytesError(r.remaining)
  return msg
}
