/**
 * Randomness as a dependency: seeded (xoshiro128**) in tests and simulation so every schedule
 * replays exactly; crypto-seeded in the daemon.
 */
import { randomBytes } from 'node:crypto'

export interface Random {
  /** Uniform in [0, 1). */
  next: () => number
  /** Uniform integer in [0, n). */
  int: (n: number) => number
}

export class SeededRandom implements Random {
  private s0: number
  private s1: number
  private s2: number
  private s3: number

  constructor (seed: number) {
    // splitmix32 to spread a small seed over the whole state
    let x = seed >>> 0
    const mix = (): number => {
      x = (x + 0x9e3779b9) >>> 0
      let z = x
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
      return (z ^ (z >>> 16)) >>> 0
    }
    this.s0 = mix(); this.s1 = mix(); this.s2 = mix(); this.s3 = mix()
  }

  private nextU32 (): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0
    const t = (this.s1 << 9) >>> 0
    this.s2 ^= this.s0; this.s3 ^= this.s1; this.s1 ^= this.s2; this.s0 ^= this.s3
    this.s2 ^= t
    this.s3 = rotl(this.s3, 11)
    this.s0 >>>= 0; this.s1 >>>= 0; this.s2 >>>= 0; this.s3 >>>= 0
    return result
  }

  next (): number { return this.nextU32() / 4294967296 }
  int (n: number): number { return Math.floor(this.next() * n) }
}

function rotl (x: number, k: number): number { return ((x << k) | (x >>> (32 - k))) >>> 0 }

/** Production randomness, seeded from the OS. */
export function systemRandom (): Random {
  return new SeededRandom(randomBytes(4).readUInt32LE(0))
}

/** Fisher–Yates shuffle in place using `rng`. */
export function shuffle<T> (items: T[], rng: Random): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.int(i + 1)
    const tmp = items[i] as T
    items[i] = items[j] as T
    items[j] = tmp
  }
  return items
}
