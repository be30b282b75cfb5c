/**
 * `vmesh inspect FILE`: the parsed summary of one VHD/VHDX (its JSON shape is a CLI contract, README "Command line", plus
 * extras) and its human-readable rendering. The CLI prints formatInspectText(result) or
 * JSON.stringify(result); a damaged file rejects with the FormatError naming the damage.
 */
import { openDisk } from './open.ts'
import type { DiskInfo, ParseOptions } from './types.ts'

/** DiskInfo minus the range list (which can be long), plus how many ranges there are. */
export type InspectResult = Omit<DiskInfo, 'scanRanges'> & { scanRangeCount: number }

export async function inspect (path: string, opts: ParseOptions = {}): Promise<InspectResult> {
  const info = await openDisk(path, opts)
  const { scanRanges, ...rest } = info
  return { ...rest, scanRangeCount: scanRanges.length }
}

/** Bytes as "4 GiB (4294967296 bytes)" — exact count kept for scripts that scrape text. */
function bytes (n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let v = n
  let u = 0
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++ }
  if (u === 0) return `${n} bytes`
  const shown = Number.isInteger(v) ? String(v) : v.toFixed(1)
  return `${shown} ${units[u] as string} (${n} bytes)`
}

export function formatInspectText (r: InspectResult): string {
  const lines: string[] = []
  const row = (k: string, v: string): void => { lines.push(`  ${k.padEnd(14)}${v}`) }
  lines.push(r.file)
  row('format', `${r.format} (${r.subformat})`)
  row('virtual size', bytes(r.virtualSize))
  row('file size', bytes(r.fileSize))
  if (r.blockSize > 0) {
    row('block size', bytes(r.blockSize))
    row('blocks', `${r.allocatedBlocks} of ${r.totalBlocks} allocated`)
  } else {
    row('blocks', 'none (fixed VHD: data stored in place)')
  }
  row('sectors', `${r.logicalSectorSize} logical / ${r.physicalSectorSize} physical`)
  row('parent', r.parent ?? 'none')
  for (const l of r.parentLocators) row('', `${l.kind}: ${l.path}`)
  row('log', r.logPending ? 'PENDING: must be replayed before the disk is used' : 'clean')
  row('scan', `${bytes(r.scanBytes)} in ${r.scanRangeCount} range${r.scanRangeCount === 1 ? '' : 's'}`)
  if (r.vhdx !== undefined) {
    const x = r.vhdx
    row('header', `${x.currentHeader} of ${x.validHeaders} valid (sequence ${x.headerSequence}), region table ${x.regionTable}`)
    const s = x.blockStates
    row('block states', `present ${s.fullyPresent}, partial ${s.partiallyPresent}, zero ${s.zero}, ` +
      `unmapped ${s.unmapped}, not present ${s.notPresent}, undefined ${s.undefined}`)
    if (x.creator !== '') row('creator', x.creator)
  }
  if (r.vhd !== undefined) {
    const d = r.vhd
    row('creator', `${d.creatorApp} ${d.creatorVersion >>> 16}.${d.creatorVersion & 0xffff} (${d.creatorHostOs})`)
    row('footer', d.footerSource === 'end' ? 'at end of file' : 'copy at offset 0 (end footer damaged)')
    row('unique id', d.uniqueId)
  }
  for (const w of r.warnings) lines.push(`  warning: ${w}`)
  return lines.join('\n')
}
