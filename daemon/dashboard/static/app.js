// The vmesh dashboard: one EventSource (/ui/events) feeds every page; actions POST to the
// daemon's control API with the session cookie and the X-Vmesh-Request header. All data is
// put into the page as text (never as HTML).
// the RPO target of a VM is its source's `rpoTargetMs` (vms[].rpo); a peer whose summary
// lacks it is compared with the config default
const DEFAULT_RPO_TARGET_MS = 60_000
const $ = (sel) => document.querySelector(sel)
let state = null
let history = []
const ops = [] // operations started from this page: { id, kind, vm, label, startedAt, status, result, to }
const points = new Map() // vm -> { at, list }
// what the operator chose or opened survives the re-render of each push
const plannedChoice = new Map() // vm -> node
const openDetails = new Set() // vm names whose recovery points are expanded

// ── small helpers ─────────────────────────────────────────────────────────────────────
function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue
    if (k === 'class') el.className = v
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'dataset') Object.assign(el.dataset, v)
    else el.setAttribute(k, v === true ? '' : String(v))
  }
  for (const c of children.flat()) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c))
  return el
}
function dur (ms) {
  if (ms === null || ms === undefined) return '–'
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.floor((ms % 60_000) / 1000)} s`
  return `${Math.floor(ms / 3_600_000)} h ${Math.floor((ms % 3_600_000) / 60_000)} min`
}
function bytes (n) {
  if (n === null || n === undefined) return '–'
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`
}
// Interactive parts (buttons, selects, expanded lists) are rebuilt only when what they show
// changed, so a push every second never swaps a button out from under a click.
const kept = new Map()
function keep (id, deps, build) {
  const k = JSON.stringify(deps)
  const c = kept.get(id)
  if (c !== undefined && c.k === k) return c.el
  const el = build()
  kept.set(id, { k, el })
  return el
}
const badge = (s, text = s) => h('span', { class: `badge s-${s}` }, text)
const bar = (f) => h('span', { class: 'bar', title: `${(f * 100).toFixed(1)}%` }, h('i', { style: `width:${Math.max(0, Math.min(100, f * 100)).toFixed(1)}%` }))
const time = (ms) => new Date(ms).toLocaleString()

async function api (method, path, body) {
  const res = await fetch(path, { method, headers: { 'x-vmesh-request': '1', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' })
  const text = await res.text()
  let json = {}
  try { json = text === '' ? {} : JSON.parse(text) } catch { json = { raw: text } }
  if (!res.ok) throw new Error(json.error?.message ?? `${res.status} ${res.statusText}`)
  return json
}

// ── live stream ───────────────────────────────────────────────────────────────────────
function connect () {
  const es = new EventSource('/ui/events')
  es.addEventListener('open', () => { $('#live').className = 'live on'; $('#live').textContent = 'live' })
  es.addEventListener('error', () => { $('#live').className = 'live off'; $('#live').textContent = 'reconnecting' })
  es.addEventListener('state', (e) => { state = JSON.parse(e.data); render() })
  es.addEventListener('history', (e) => { history = JSON.parse(e.data); renderHistory() })
  es.addEventListener('event', (e) => { history.push(JSON.parse(e.data)); if (history.length > 1000) history.shift(); renderHistory() })
}

// ── model: the mesh from every summary ────────────────────────────────────────────────
function fresh (n) { return n.summary !== null && !n.stale }
function vmModel () {
  const vms = new Map()
  for (const n of state.mesh.nodes) {
    if (n.summary === null) continue
    for (const v of n.summary.vms) {
      let m = vms.get(v.name)
      if (m === undefined) { m = { name: v.name, owner: null, epoch: -1, runsOn: [], source: null, sources: [], holders: [] }; vms.set(v.name, m) }
      if (v.epoch > m.epoch || (v.epoch === m.epoch && m.owner === null)) { m.owner = v.owner; m.epoch = v.epoch }
      if (v.runningHere) m.runsOn.push({ node: n.name, stale: !fresh(n) })
      if (v.targets.length > 0) m.sources.push({ node: n.name, fresh: fresh(n), vm: v })
      if (v.replica !== null) m.holders.push({ node: n.name, fresh: fresh(n), ageMs: n.ageMs, ...v.replica })
    }
  }
  // the source whose targets are shown: a fresh summary before a stale one (a dead node's last
  // word still says it runs the VM), then the owner's, then one that runs it
  const rank = (m, x) => (x.fresh ? 4 : 0) + (x.node === m.owner ? 2 : 0) + (x.vm.runningHere ? 1 : 0)
  for (const m of vms.values()) m.source = m.sources.sort((x, y) => rank(m, y) - rank(m, x))[0] ?? null
  return [...vms.values()].sort((a, b) => a.name.localeCompare(b.name))
}

// ── pages ─────────────────────────────────────────────────────────────────────────────
function render () {
  if (state === null) return
  $('#node').textContent = `${state.node} · ${state.status.node.role} · ${state.status.node.profile}`
  renderMesh()
  renderVms()
}

function renderMesh () {
  const tbody = $('#nodes tbody')
  tbody.replaceChildren(...state.mesh.nodes.map(n => h('tr', { dataset: { node: n.name }, class: n.stale && !n.self ? 'stale' : undefined },
    h('td', {}, n.name, n.self ? h('span', { class: 'muted' }, ' (this node)') : ''),
    h('td', {}, n.role),
    h('td', { class: 'state' }, badge(n.state)),
    h('td', {}, n.self ? '–' : n.connected ? 'yes' : 'no'),
    h('td', { class: 'heard' }, n.self ? 'now' : n.ageMs === null ? 'never' : `${dur(n.ageMs)} ago`, n.stale && !n.self ? h('span', { class: 'badge s-stale' }, ' stale') : ''),
    h('td', {}, n.summary ? dur(n.summary.uptimeMs) : '–')
  )))
  const names = state.mesh.nodes.map(n => n.name)
  $('#matrix thead').replaceChildren(h('tr', {}, h('th', {}, 'viewer \\ member'), ...names.map(x => h('th', {}, x))))
  $('#matrix tbody').replaceChildren(...state.mesh.nodes.map(n => h('tr', { class: n.stale && !n.self ? 'stale' : undefined, dataset: { viewer: n.name } },
    h('th', {}, n.name, n.summary && !n.self ? h('span', { class: 'muted' }, ` (${dur(n.ageMs)} ago)`) : ''),
    ...names.map(x => {
      if (x === n.name) return h('td', {}, badge('self'))
      const m = n.summary?.members.find(y => y.name === x)
      return h('td', { dataset: { member: x } }, m ? badge(m.state) : '–')
    })
  )))
  $('#progress-mesh').replaceChildren(progressList(state.progress))
}

function progressList (items) {
  if (items.length === 0) return h('p', { class: 'muted' }, 'No seeding or transfer in progress.')
  return h('table', { class: 'progress' }, h('thead', {}, h('tr', {}, ...['VM', 'from → to', 'work', 'progress', 'pending', 'rate', 'ETA'].map(x => h('th', {}, x)))),
    h('tbody', {}, ...items.map(p => h('tr', { dataset: { vm: p.vm, to: p.to } },
      h('td', {}, p.vm), h('td', {}, `${p.from} → ${p.to}`), h('td', {}, p.kind === 'seed' ? 'initial copy' : 'catching up'),
      h('td', {}, p.fraction !== null ? [bar(p.fraction), ` ${(p.fraction * 100).toFixed(1)}%`] : '–'),
      h('td', {}, bytes(p.bytesPending)), h('td', {}, p.rateBytesPerSec !== null ? `${bytes(p.rateBytesPerSec)}/s` : '–'), h('td', { class: 'eta' }, p.etaMs !== null ? dur(p.etaMs) : '–')))))
}

function renderVms () {
  const self = state.node
  const model = vmModel()
  const tests = state.status.tests ?? []
  $('#vms').replaceChildren(...(model.length === 0 ? [h('p', { class: 'muted' }, 'No VMs known in the mesh.')] : model.map(m => {
    const src = m.source
    const targetRpo = src?.vm.rpoTargetMs ?? DEFAULT_RPO_TARGET_MS
    const targets = src === null ? [] : src.vm.targets
    const holdsHere = m.holders.some(x => x.node === self)
    const test = tests.find(t => t.vm === m.name)
    // a planned failover ships the final generation to a live replica target of the owner: so
    // only the owner's own targets that are connected qualify (after an unplanned failover the
    // new owner has none until it sources the VM to the others)
    const live = new Set(state.mesh.nodes.filter(n => n.state === 'alive' || n.state === 'self').map(n => n.name))
    const candidates = src !== null && src.node === m.owner ? targets.filter(t => live.has(t.node) && (t.state === 'in-sync' || t.state === 'behind')).map(t => t.node) : []
    const chosen = candidates.includes(plannedChoice.get(m.name)) ? plannedChoice.get(m.name) : candidates[0]
    const ownerHere = m.owner === self
    const pts = points.get(m.name)
    if (holdsHere && (pts === undefined || Date.now() - pts.at > 10_000)) void loadPoints(m.name)
    return h('div', { class: 'vm', dataset: { vm: m.name } },
      h('h3', {}, m.name),
      h('div', { class: 'facts' },
        h('span', {}, 'owner ', h('b', { class: 'owner' }, m.owner ?? '–'), ` · epoch ${m.epoch}`),
        h('span', { class: 'runs-on' }, 'runs on ', m.runsOn.length === 0 ? h('b', {}, 'nowhere') : m.runsOn.map(r => h('b', { class: r.stale ? 'muted' : 's-running' }, r.node + (r.stale ? ' (stale)' : '')))),
        h('span', {}, 'changes: ', src?.vm.changeSource ?? '–', src?.vm.rpoBoundMs != null ? ` (RPO ≤ ${dur(src.vm.rpoBoundMs)})` : ''),
        h('span', {}, `generation ${src?.vm.generation ?? '–'}`)),
      h('table', {}, h('thead', {}, h('tr', {}, ...['replica on', 'state', 'acked gen', 'lag', `RPO (target ${dur(targetRpo)})`, 'pending', 'rate', 'progress / ETA', 'last consistent'].map(x => h('th', {}, x)))),
        h('tbody', {}, ...targets.map(t => {
          const holder = m.holders.find(x => x.node === t.node)
          const pr = state.progress.find(p => p.vm === m.name && p.to === t.node)
          return h('tr', { dataset: { target: t.node } },
            h('td', {}, t.node), h('td', { class: 'tstate' }, badge(t.state)), h('td', {}, t.ackedGeneration),
            h('td', {}, dur(t.lagMs)), h('td', { class: t.rpoMs !== null && t.rpoMs > targetRpo ? 'over' : undefined }, dur(t.rpoMs)),
            h('td', {}, bytes(t.bytesPending)), h('td', {}, t.rateBytesPerSec ? `${bytes(t.rateBytesPerSec)}/s` : '–'),
            h('td', {}, pr ? [pr.fraction !== null ? bar(pr.fraction) : '', ` ETA ${pr.etaMs !== null ? dur(pr.etaMs) : '–'}`] : '–'),
            h('td', {}, holder ? `gen ${holder.consistentGeneration ?? '–'}${holder.seeding ? ' (seeding)' : ''}${holder.fresh ? '' : ' (stale)'}` : '–'))
        }),
        ...m.holders.filter(x => !targets.some(t => t.node === x.node)).map(x => h('tr', { dataset: { target: x.node } }, h('td', {}, x.node), h('td', {}, badge(x.seeding ? 'seeding' : 'in-sync', x.seeding ? 'seeding' : `replica of ${x.from}`)), h('td', {}, x.appliedGeneration), h('td', { colspan: 5, class: 'muted' }, `source ${x.from} not reporting targets`), h('td', {}, `gen ${x.consistentGeneration ?? '–'}`))))),
      operationsView(m.name),
      keep(`points:${m.name}`, [holdsHere, pts?.list.map(p => p.id) ?? null, m.owner], () => pointsView(m, holdsHere, pts)),
      keep(`actions:${m.name}`, [ownerHere, m.owner, candidates, chosen, holdsHere, test?.testName ?? null], () => h('div', { class: 'actions' },
        h('label', {}, 'planned failover to ', h('select', { dataset: { plannedTo: m.name }, onchange: (e) => plannedChoice.set(m.name, e.target.value) }, ...candidates.map(c => h('option', { value: c, selected: c === chosen }, c)))),
        h('button', { type: 'button', dataset: { action: 'planned', vm: m.name }, disabled: !ownerHere || candidates.length === 0, title: !ownerHere ? `a planned failover runs on the owner (${m.owner ?? 'none'}): open its dashboard` : candidates.length === 0 ? 'no connected replica target of this owner yet' : undefined, onclick: () => plannedFailover(m) }, 'Planned failover…'),
        h('button', { type: 'button', dataset: { action: 'verify', vm: m.name }, disabled: !ownerHere, title: ownerHere ? undefined : 'verify runs on the VM\'s source (its owner)', onclick: () => verify(m) }, 'Verify…'),
        test === undefined
          ? h('button', { type: 'button', dataset: { action: 'test', vm: m.name }, disabled: !holdsHere, title: holdsHere ? undefined : 'test failover runs on a replica holder', onclick: () => testFailover(m) }, 'Test failover…')
          : h('button', { type: 'button', dataset: { action: 'cleanup', vm: m.name }, onclick: () => testCleanup(m, test) }, `Clean up test (${test.testName})…`),
        ownerHere ? '' : h('span', { class: 'muted' }, m.owner ? `owner: ${m.owner}` : '')))
    )
  })))
  renderOps()
}

// verify, restore and final ships on this node (its status): running ones, and those that
// ended in the last minute
const OP_NAMES = { verify: 'verify', restore: 'restore', 'final-ship': 'final ship (planned failover)' }
function operationsView (vm) {
  const list = (state.status.operations ?? []).filter(o => o.vm === vm && (o.state === 'running' || Date.now() - (o.startedAtMs + o.elapsedMs) < 60_000))
  if (list.length === 0) return ''
  return h('table', { class: 'progress ops-progress' }, h('thead', {}, h('tr', {}, ...['operation', 'state', 'phase', 'progress', 'done', 'rate', 'ETA', 'elapsed'].map(x => h('th', {}, x)))),
    h('tbody', {}, ...list.map(o => {
      const f = o.totalBytes > 0 ? Math.min(1, o.doneBytes / o.totalBytes) : null
      return h('tr', { dataset: { operation: o.kind, opId: o.id, state: o.state } },
        h('td', {}, OP_NAMES[o.kind] ?? o.kind, o.peer ? ` (${o.peer})` : ''), h('td', {}, badge(o.state === 'running' ? 'running' : o.state === 'done' ? 'in-sync' : 'error', o.state)),
        h('td', {}, o.error ? `${o.phase}: ${o.error}` : o.phase),
        h('td', {}, f !== null ? [bar(f), ` ${(f * 100).toFixed(1)}%`] : '–'),
        h('td', {}, `${bytes(o.doneBytes)} / ${bytes(o.totalBytes)}`), h('td', {}, o.rateBytesPerSec ? `${bytes(o.rateBytesPerSec)}/s` : '–'),
        h('td', { class: 'eta' }, o.state === 'running' && o.etaMs !== null ? dur(o.etaMs) : '–'), h('td', {}, dur(o.elapsedMs)))
    })))
}

function pointsView (m, holdsHere, pts) {
  if (!holdsHere) return h('p', { class: 'muted' }, 'Recovery points are listed on the replica holders\' dashboards.')
  const list = pts?.list ?? []
  if (list.length === 0) return h('p', { class: 'muted' }, pts === undefined ? 'Loading recovery points…' : 'No recovery points here yet.')
  return h('details', { open: openDetails.has(m.name), ontoggle: (e) => { if (e.target.open) openDetails.add(m.name); else openDetails.delete(m.name) } }, h('summary', {}, `${list.length} recovery point(s) on this node, newest ${time(list[list.length - 1].createdAtMs)}`),
    h('table', {}, h('tbody', {}, ...list.slice().reverse().slice(0, 24).map(p => h('tr', {}, h('td', {}, p.id), h('td', {}, time(p.createdAtMs)), h('td', {}, `gen ${p.generation}`),
      h('td', {}, h('button', { type: 'button', dataset: { action: 'point', vm: m.name, point: p.id }, onclick: () => failoverToPoint(m, p) }, 'Fail over to this point…')))))))
}

async function loadPoints (vm) {
  points.set(vm, { at: Date.now(), list: points.get(vm)?.list ?? [] })
  try {
    const r = await api('GET', `/v1/replication/points?vm=${encodeURIComponent(vm)}`)
    const list = r.replicas.flatMap(x => x.points.map(p => ({ ...p, from: x.from }))).sort((a, b) => a.createdAtMs - b.createdAtMs)
    points.set(vm, { at: Date.now(), list })
    renderVms()
  } catch { /* shown as none; retried after 10 s */ }
}

// ── actions (each behind a confirmation naming its consequence) ──────────────────────────
function confirmAction (title, text, ok) {
  return new Promise((resolve) => {
    const d = $('#confirm')
    $('#confirm-title').textContent = title
    $('#confirm-text').textContent = text
    $('#confirm-ok').textContent = ok
    d.addEventListener('close', () => resolve(d.returnValue === 'ok'), { once: true })
    d.returnValue = ''
    d.showModal()
  })
}

async function run (kind, vm, label, call, extra = {}) {
  const op = { id: Math.random().toString(36).slice(2), kind, vm, label, startedAt: Date.now(), status: 'running', result: '', ...extra }
  ops.unshift(op)
  if (ops.length > 10) ops.pop()
  renderOps()
  try { op.result = describe(kind, await call(op.id)); op.status = 'done' } catch (err) { op.result = err.message; op.status = 'failed' }
  op.endedAt = Date.now()
  renderOps()
}

function describe (kind, r) {
  if (kind === 'verify') return r.ok ? 'source and every replica identical' : `differences: ${r.targets.map(t => `${t.target}: ${t.mismatchedBlocks} block(s)`).join(', ')}`
  if (kind === 'test') return `test instance ${r.testName} running on ${r.node} from recovery point ${r.point}`
  if (kind === 'cleanup') return `test instance ${r.testName} removed`
  return 'accepted'
}

async function plannedFailover (m) {
  const to = document.querySelector(`select[data-planned-to="${CSS.escape(m.name)}"]`).value
  if (!await confirmAction(`Planned failover of ${m.name} to ${to}`, `${m.name} will be shut down on ${m.owner}, its final changes shipped to ${to}, and it will start on ${to}. The VM is unavailable during the move; nothing is lost.`, `Move ${m.name} to ${to}`)) return
  await run('planned', m.name, `planned failover of ${m.name} to ${to}`, () => api('POST', '/v1/failover', { vm: m.name, to, planned: true }), { to })
}
async function verify (m) {
  if (!await confirmAction(`Verify ${m.name}`, `Every replica of ${m.name} is compared block by block with the source. This reads all of the VM's disks on ${m.owner} and on every replica holder; replication goes on meanwhile.`, 'Verify')) return
  await run('verify', m.name, `verify ${m.name}`, (id) => api('POST', '/v1/replication/verify', { vm: m.name, op: id }))
}
async function testFailover (m) {
  if (!await confirmAction(`Test failover of ${m.name}`, `An isolated clone of ${m.name} (no network) boots on ${state.node} from the latest consistent recovery point. It uses this host's CPU, memory and disk space; ${m.name} itself and its replication are not touched.`, 'Start test')) return
  await run('test', m.name, `test failover of ${m.name} on ${state.node}`, () => api('POST', '/v1/failover/test', { vm: m.name }))
}
async function testCleanup (m, t) {
  if (!await confirmAction(`Clean up the test of ${m.name}`, `The test instance ${t.testName} is turned off and its files are deleted. Anything done inside it is lost.`, 'Remove test')) return
  await run('cleanup', m.name, `cleanup of ${t.testName}`, () => api('POST', '/v1/failover/test/cleanup', { vm: m.name }))
}
async function failoverToPoint (m, p) {
  if (!await confirmAction(`Fail over ${m.name} to recovery point ${p.id}`, `${m.name} becomes owned by ${state.node} and starts here from the state of ${time(p.createdAtMs)} (generation ${p.generation}). Every change after that point is lost, and the instance on ${m.owner ?? 'its owner'} is turned off if it still runs.`, `Fail over to ${p.id}`)) return
  await run('point', m.name, `failover of ${m.name} to recovery point ${p.id}`, () => api('POST', '/v1/failover', { vm: m.name, to: state.node, point: p.id }))
}

function renderOps () {
  const el = $('#ops')
  el.replaceChildren(...ops.map(op => {
    const elapsed = (op.endedAt ?? Date.now()) - op.startedAt
    let progress = ''
    // the daemon's own record of the work: the verify by the id the page gave it, the planned
    // failover's final ship to the chosen node begun since the request
    // (a planned failover's request is done once accepted; its ship runs on after)
    const so = state === null ? undefined : (state.status.operations ?? []).find(o => op.kind === 'verify' ? o.id === op.id : op.kind === 'planned' && o.kind === 'final-ship' && o.vm === op.vm && o.peer === op.to && o.startedAtMs >= op.startedAt - 5000)
    if (so !== undefined && (op.status === 'running' || so.state === 'running')) {
      const pct = so.totalBytes > 0 ? ` ${(100 * Math.min(1, so.doneBytes / so.totalBytes)).toFixed(0)}% of ${bytes(so.totalBytes)}` : ''
      progress = ` · ${so.phase}${pct}${so.state === 'running' ? `, ${so.rateBytesPerSec ? bytes(so.rateBytesPerSec) + '/s' : '–'}, ETA ${so.etaMs !== null ? dur(so.etaMs) : '–'}` : ` (${so.state})`}`
    } else if (op.status === 'running' && op.kind === 'planned' && state !== null) {
      const pr = state.progress.find(p => p.vm === op.vm && p.to === op.to)
      progress = pr ? ` · final ship: ${bytes(pr.bytesPending)} left at ${pr.rateBytesPerSec ? bytes(pr.rateBytesPerSec) + '/s' : '–'}, ETA ${pr.etaMs !== null ? dur(pr.etaMs) : '–'}` : ''
    }
    return h('div', { class: `op ${op.status}`, dataset: { op: op.kind, vm: op.vm, status: op.status } }, h('b', {}, op.label), ` — ${op.status} (${dur(elapsed)})${progress}`, op.result ? h('div', { class: 'result' }, op.result) : '')
  }))
}
setInterval(() => { if (ops.some(o => o.status === 'running')) renderOps() }, 1000)

function renderHistory () {
  const kind = $('#history-kind').value
  const rows = history.filter(e => kind === '' || e.kind === kind).slice(-300).reverse()
  $('#history tbody').replaceChildren(...rows.map(e => h('tr', { class: `sev-${e.severity}`, dataset: { kind: e.kind, seq: e.seq } }, h('td', {}, time(e.atWallMs)), h('td', {}, e.kind), h('td', {}, e.text))))
}

// ── navigation ────────────────────────────────────────────────────────────────────────
function show () {
  const page = (location.hash.slice(1) || 'mesh')
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== `page-${page}`
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === page)
}
window.addEventListener('hashchange', show)
$('#history-kind').addEventListener('change', renderHistory)
$('#logout').addEventListener('click', async () => { await api('POST', '/ui/logout').catch(() => {}); location.reload() })
show()
connect()
