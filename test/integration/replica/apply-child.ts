/**
 * Child process for the kill -9 test: opens the store in argv[2] (recovering whatever the last
 * kill left), finishes or resumes the seed, then applies generations until argv[3], printing
 * one line per event. The parent kills it at random moments.
 */
import { systemClock } from '../../../common/clock.ts'
import { ReplicaStore } from '../../../storage/replica/store.ts'
import { genSpec, RETENTION, DISK, CFG } from './gen-model.ts'

const dir = process.argv[2] as string
const last = Number(process.argv[3] ?? 1000)
const say = (line: string): void => { process.stdout.write(`${line}\n`) }

const store = await ReplicaStore.open({ clock: systemClock }, { dir, vm: 'kill', source: 'hv-a', retention: RETENTION, seedCheckpointBytes: 512 * 1024 })
say(`ready ${store.state().appliedGeneration}`)
if (store.state().appliedGeneration === 0) {
  const spec = genSpec(1)
  const progress = store.seedProgress()
  const durable = progress?.generation === 1 ? progress.files : {}
  const w = await store.beginGeneration(spec.header)
  let skipped = 0
  for (const op of spec.ops) {
    if (op.kind !== 'block') continue
    const path = op.fileId === 1 ? DISK : CFG
    if ((durable[path] ?? []).some(r => r.offset <= op.offset && op.offset + op.data.length <= r.offset + r.length)) { skipped++; continue }
    await w.writeBlock(op.fileId, op.offset, op.data)
  }
  await w.commit()
  say(`committed 1 skipped ${skipped}`)
}
for (let g = store.state().appliedGeneration + 1; g <= last; g++) {
  const spec = genSpec(g)
  const w = await store.beginGeneration(spec.header)
  for (const op of spec.ops) {
    if (op.kind === 'block') await w.writeBlock(op.fileId, op.offset, op.data)
    else await w.setSize(op.fileId, op.size)
  }
  await w.commit()
  say(`committed ${g}`)
}
await store.close()
say('done')
