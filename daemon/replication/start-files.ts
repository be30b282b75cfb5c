/**
 * A replica's (or restored point's) files as a hypervisor driver wants them: disks told apart
 * by the source path's extension, the other files whole, with the source → local map.
 */
import { extname } from 'node:path'
import type { VmStartFiles } from '../hypervisor/driver.ts'

const DISK_EXT = new Set(['.vhd', '.vhdx', '.avhd', '.avhdx', '.img', '.raw', '.qcow2'])

/** `files` (source path → local path) split into disks and other files, local paths. */
export function splitFiles (files: Record<string, string>): { disks: string[], files: string[] } {
  const disks: string[] = []
  const other: string[] = []
  for (const [src, path] of Object.entries(files)) {
    if (DISK_EXT.has(extname(src).toLowerCase())) disks.push(path); else other.push(path)
  }
  return { disks, files: other }
}

/** Start files for a driver from `files` (source path → local path), run in `dir`. */
export function startFiles (files: Record<string, string>, dir: string): VmStartFiles {
  return { ...splitFiles(files), dir, sourceMap: { ...files } }
}
