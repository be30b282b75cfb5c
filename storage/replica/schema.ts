/**
 * Shapes persisted by the replica store — the state document, the seed progress document and
 * the JSON headers of redo/undo files — with zod schemas, because bytes read back from disk are
 * checked like any other input.
 */
import { z } from 'zod'

const gen = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const size = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const ms = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
const fileKind = z.enum(['disk', 'whole-file'])
/** A replica file name: one path component, nothing special. */
const fileName = z.string().min(1).max(255).regex(/^[A-Za-z0-9._~-]+$/).refine(s => s !== '.' && s !== '..')

export type FileKind = z.infer<typeof fileKind>

export const fileEntrySchema = z.object({ name: fileName, kind: fileKind, size })
export type FileEntry = z.infer<typeof fileEntrySchema>

export const pointEntrySchema = z.object({ generation: gen, createdAtMs: ms })
export type PointEntry = z.infer<typeof pointEntrySchema>

/** An undo log turning the replica at `generation` back into `base`. */
export const undoEntrySchema = z.object({ generation: gen, base: gen, file: fileName, bytes: size })
export type UndoEntry = z.infer<typeof undoEntrySchema>

export const seedingSchema = z.object({
  generation: gen,
  /** changes whenever a seed restarts from scratch; progress documents carry it */
  seedId: z.string().min(1).max(64),
  consistent: z.boolean(),
  createdAtMs: ms,
  files: z.record(z.string(), fileEntrySchema)
})
export type SeedingInfo = z.infer<typeof seedingSchema>

export const stateSchema = z.object({
  format: z.literal('vmesh-replica'),
  version: z.literal(1),
  vm: z.string(),
  source: z.string(),
  applied: gen,
  appliedCreatedAtMs: ms,
  appliedIsConsistent: z.boolean(),
  /** source path → replica file, as of `applied` */
  files: z.record(z.string(), fileEntrySchema),
  /** retained recovery points, oldest first; each ≤ applied */
  points: z.array(pointEntrySchema),
  /** the undo chain, oldest first: undo[i].base === undo[i-1].generation, last.generation === applied */
  undo: z.array(undoEntrySchema),
  seeding: seedingSchema.nullable(),
  /** a finalize in progress: roll back to this generation */
  finalizing: z.object({ target: gen }).nullable(),
  finalized: z.boolean(),
  /**
   * The retention policy the replica's source last sent (absent until one was sent, and in
   * state written by older releases, which ignore it): open() prunes by it rather than by a
   * default that might drop points the source's config keeps.
   */
  retention: z.object({ maxPoints: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), keepAllWithinMs: ms, hourlyBeyond: z.boolean() }).optional()
})
export type PersistedState = z.infer<typeof stateSchema>

export const seedProgressSchema = z.object({
  seedId: z.string(),
  /** path → durable [start, end) pairs */
  files: z.record(z.string(), z.array(z.tuple([size, size])))
})
export type SeedProgressDoc = z.infer<typeof seedProgressSchema>

export const redoHeaderSchema = z.object({
  kind: z.literal('redo'),
  generation: gen,
  baseGeneration: gen,
  consistent: z.boolean(),
  createdAtMs: ms,
  files: z.array(z.object({ fileId: z.number().int().min(0).max(0xffff_ffff), path: z.string().min(1), name: fileName, kind: fileKind, size }))
})
export type RedoHeader = z.infer<typeof redoHeaderSchema>

export const undoHeaderSchema = z.object({
  kind: z.literal('undo'),
  generation: gen,
  baseGeneration: gen,
  /** the files as they were at baseGeneration; oldSize null = the file did not exist */
  files: z.array(z.object({ idx: z.number().int().min(0).max(0xffff_ffff), path: z.string().min(1), name: fileName, kind: fileKind, oldSize: size.nullable() }))
})
export type UndoHeader = z.infer<typeof undoHeaderSchema>

/** Cross-field rules the schema cannot express; returns what is wrong, or undefined. */
export function stateInvariantViolation (s: PersistedState): string | undefined {
  const reachable = new Set<number>([s.applied])
  for (let i = 0; i < s.undo.length; i++) {
    const e = s.undo[i] as UndoEntry
    if (e.base >= e.generation) return `undo entry ${e.generation}→${e.base} goes forward`
    if (i > 0 && e.base !== (s.undo[i - 1] as UndoEntry).generation) return `undo chain broken at ${e.generation}`
    reachable.add(e.base)
  }
  const top = s.undo[s.undo.length - 1]
  if (top !== undefined && top.generation !== s.applied) return `undo chain ends at ${top.generation}, applied is ${s.applied}`
  let prev = -1
  for (const p of s.points) {
    if (p.generation <= prev) return 'points out of order'
    if (!reachable.has(p.generation)) return `point ${p.generation} is not reachable through the undo chain`
    prev = p.generation
  }
  if (s.seeding !== null && s.applied !== 0) return 'seeding a replica that holds a generation'
  if (s.finalizing !== null && s.finalizing.target > s.applied) return 'finalize target above applied'
  return undefined
}

export function emptyState (vm: string, source: string): PersistedState {
  return {
    format: 'vmesh-replica',
    version: 1,
    vm,
    source,
    applied: 0,
    appliedCreatedAtMs: 0,
    appliedIsConsistent: false,
    files: {},
    points: [],
    undo: [],
    seeding: null,
    finalizing: null,
    finalized: false
  }
}
