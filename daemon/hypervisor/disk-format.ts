/**
 * A disk's qemu format from its signature, never from probing or the extension: a fixed VHD
 * has no header (only a 512-byte "conectix" footer at the end) and qemu would probe it as raw.
 */
import { open } from 'node:fs/promises'

export type QemuDiskFormat = 'vpc' | 'vhdx' | 'raw'

export async function detectDiskFormat (path: string): Promise<QemuDiskFormat> {
  const fh = await open(path, 'r')
  try {
    const { size } = await fh.stat()
    const head = Buffer.alloc(8)
    const n = (await fh.read(head, 0, 8, 0)).bytesRead
    if (n === 8 && head.toString('latin1') === 'vhdxfile') return 'vhdx'
    // a dynamic VHD also carries a copy of the footer at offset 0
    if (n === 8 && head.toString('latin1') === 'conectix') return 'vpc'
    if (size >= 512) {
      const foot = Buffer.alloc(8)
      await fh.read(foot, 0, 8, size - 512)
      if (foot.toString('latin1') === 'conectix') return 'vpc'
    }
    return 'raw'
  } finally {
    await fh.close()
  }
}
