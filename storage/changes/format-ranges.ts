/**
 * Adapter from storage/formats to the scanner: the byte ranges of a VHD/VHDX a reader can reach
 * (whole file for raw or damaged files); everything else is scanned as zeros. Pass it as
 * `rangesOf` to HashScanSource / ChangeTracker / scanFile.
 */
import { dataRangesForFile } from '../formats/index.ts'
import type { RangesOf } from './source.ts'

export const formatRangesOf: RangesOf = async (path) => (await dataRangesForFile(path)).ranges
