// The soak's stand-in guest: started by the VM script on the disk file vmesh hands to `start`
// (a fixed VHD: guest data from offset 0, a 512-byte footer), it overwrites one random 4 KiB page
// every 0.3-1.5 s. Before each write it appends to the VM's states log the SHA-256 of the whole
// file as it will be after the write, with the parent state, the page and a tag the page's bytes
// derive from — so any state the file can be in, at any instant, is logged before it exists, and
// the soak can rebuild it (a generation snapshot to `qemu-img compare` a replica against).
// One page per write: a kill -9 cannot tear a single page copy, so the file is always a logged state.
// Plain JS (no tsx start-up per VM). argv: vm node epoch statesLog disk
import { openSync, readFileSync, writeSync, appendFileSync } from 'node:fs'
import { createHash } from 'node:crypto'

const [vm, node, epoch, log, disk] = process.argv.slice(2)
const PAGE = 4096
const img = readFileSync(disk)
const pages = Math.floor((img.length - 512) / PAGE)
const fd = openSync(disk, 'r+')
const sha = (b) => createHash('sha256').update(b).digest('hex')
let current = sha(img)
const record = (o) => appendFileSync(log, JSON.stringify({ t: Date.now(), vm, node, epoch: Number(epoch), pid: process.pid, ...o }) + '\n')
record({ start: current })

/** A page of the 32-byte SHA-256 of `tag`, repeated (the soak rebuilds it from the tag alone). */
function pageOf (tag) {
  const d = createHash('sha256').update(tag).digest()
  const b = Buffer.alloc(PAGE)
  for (let i = 0; i < PAGE; i += 32) d.copy(b, i)
  return b
}

let seq = 0
function step () {
  seq++
  const off = Math.floor(Math.random() * pages) * PAGE
  const tag = `${vm}/${node}/${epoch}/${process.pid}/${seq}`
  const data = pageOf(tag)
  const old = Buffer.from(img.subarray(off, off + PAGE))
  data.copy(img, off)
  const next = sha(img)
  record({ parent: current, hash: next, off, tag })
  try {
    if (writeSync(fd, data, 0, PAGE, off) !== PAGE) throw new Error('short write')
    current = next
  } catch (err) {
    // e.g. ENOSPC on a full replica volume: the state was logged but never reached; go on from the old one
    old.copy(img, off)
    record({ failed: tag, error: String(err.code ?? err.message) })
    // a short write may have changed part of the page: put the old bytes back (best effort)
    try { writeSync(fd, old, 0, PAGE, off) } catch {}
  }
  setTimeout(step, 300 + Math.floor(Math.random() * 1200))
}
setTimeout(step, 300)
