/**
 * Parsing virsh output and rewriting domain XML. No XML library: libvirt writes a regular,
 * attribute-quoted XML, and the rewrite only touches `<disk>` sources and `<nvram>`, leaving
 * every other byte as it was (so the definition survives intact).
 */
export interface BlkDev { type: string, device: string, target: string, source: string | null }

/** `virsh list --all --name`: one name per line, blank lines ignored. */
export function parseNames (stdout: string): string[] {
  return stdout.split(/\r?\n/).map(l => l.trim()).filter(l => l !== '')
}

/**
 * `virsh domblklist DOM --details`:
 *  ` Type   Device   Target   Source`, a dashes line, then rows; Source may contain spaces and
 *  is `-` when empty (a CD drive without media).
 */
export function parseDomblklist (stdout: string): BlkDev[] {
  const lines = stdout.split(/\r?\n/)
  const dash = lines.findIndex(l => /^\s*-{5,}\s*$/.test(l))
  if (dash < 0) return []
  const out: BlkDev[] = []
  for (const line of lines.slice(dash + 1)) {
    const m = /^\s*(\S+)\s+(\S+)\s+(\S+)\s+(.*?)\s*$/.exec(line)
    if (m == null) continue
    const source = m[4] as string
    out.push({ type: m[1] as string, device: m[2] as string, target: m[3] as string, source: source === '-' || source === '' ? null : source })
  }
  return out
}

/** `virsh domstate DOM`: the first non-empty line ("running", "shut off", ...). */
export function parseDomstate (stdout: string): string {
  return stdout.split(/\r?\n/).map(l => l.trim()).find(l => l !== '') ?? ''
}

/** libvirt states in which the VM's process is gone. */
export const OFF_STATES = new Set(['shut off', 'crashed'])

export function inventoryState (domstate: string): 'running' | 'off' | 'other' {
  if (domstate === 'running' || domstate === 'idle' || domstate === 'blocked' || domstate === 'no state') return 'running'
  if (OFF_STATES.has(domstate)) return 'off'
  return 'other'
}

export function xmlUnescape (s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp|#(\d+)|#x([0-9a-fA-F]+));/g, (_m, name: string, dec?: string, hex?: string) => {
    if (dec !== undefined) return String.fromCodePoint(Number(dec))
    if (hex !== undefined) return String.fromCodePoint(parseInt(hex, 16))
    return ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' } as Record<string, string>)[name] ?? ''
  })
}

export function xmlEscape (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;')
}

/** Text of the first `<tag>` element directly in the document (name, uuid, nvram). */
export function elementText (xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}(?:\\s[^>]*)?>([^<]*)</${tag}>`).exec(xml)
  return m == null ? undefined : xmlUnescape((m[1] as string).trim())
}

function attr (tagText: string, name: string): string | undefined {
  const m = new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`).exec(tagText)
  return m == null ? undefined : xmlUnescape(m[1] ?? m[2] ?? '')
}

export interface DiskRef { device: string, type: string, source: string | null }

/** The `<disk>` elements of a domain, in order. */
export function domainDisks (xml: string): DiskRef[] {
  const out: DiskRef[] = []
  for (const m of xml.matchAll(/<disk\b([^>]*)>([\s\S]*?)<\/disk>/g)) {
    const open = m[1] as string
    const src = /<source\b[^>]*>/.exec(m[2] as string)
    const source = src == null ? undefined : (attr(src[0], 'file') ?? attr(src[0], 'dev'))
    out.push({ device: attr(open, 'device') ?? 'disk', type: attr(open, 'type') ?? 'file', source: source ?? null })
  }
  return out
}

/**
 * Returns `xml` with each file- or block-backed `device='disk'` source replaced by
 * `mapDisk(source)` (a block device becomes a file: replicas are files), and the `<nvram>`
 * path by `mapFile(path)` when that returns one. Sources a mapper leaves undefined are listed
 * in `unmapped`.
 */
export function rewriteDomainXml (xml: string, mapDisk: (source: string) => string | undefined, mapFile: (path: string) => string | undefined): { xml: string, unmapped: string[] } {
  const unmapped: string[] = []
  let out = xml.replace(/<disk\b([^>]*)>([\s\S]*?)<\/disk>/g, (whole, open: string, body: string) => {
    if ((attr(open, 'device') ?? 'disk') !== 'disk') return whole
    const type = attr(open, 'type') ?? 'file'
    if (type !== 'file' && type !== 'block') return whole
    const srcTag = /<source\b[^>]*?(\/?)>/.exec(body)
    if (srcTag == null) return whole
    const source = attr(srcTag[0], type === 'file' ? 'file' : 'dev')
    if (source === undefined) return whole
    const replica = mapDisk(source)
    if (replica === undefined) { unmapped.push(source); return whole }
    const newOpen = open.replace(/(\stype=)(['"])block\2/, "$1'file'")
    const newSrc = srcTag[0].replace(/\s(?:file|dev)=(?:'[^']*'|"[^"]*")/, () => ` file='${xmlEscape(replica)}'`)
    // the <driver type=...> (raw, qcow2, vpc, vhdx) stays: a replica has its source's format
    const newBody = body.replace(srcTag[0], () => newSrc)
    return `<disk${newOpen}>${newBody}</disk>`
  })
  out = out.replace(/(<nvram\b[^>]*>)([^<]*)(<\/nvram>)/, (whole, a: string, path: string, b: string) => {
    const replica = mapFile(xmlUnescape(path.trim()))
    return replica === undefined ? whole : `${a}${xmlEscape(replica)}${b}`
  })
  return { xml: out, unmapped }
}

/**
 * A test instance's domain: `xml` renamed to `testName`, without its `<uuid>` (libvirt makes
 * a new one, so the clone never claims the VM's identity) and without any `<interface>` (no
 * NIC at all: the clone cannot reach the VM's LAN or clash with its addresses).
 */
export function isolatedTestXml (xml: string, testName: string): string {
  return xml
    .replace(/<name(?:\s[^>]*)?>[^<]*<\/name>/, () => `<name>${xmlEscape(testName)}</name>`)
    .replace(/[ \t]*<uuid(?:\s[^>]*)?>[^<]*<\/uuid>[ \t]*\r?\n?/, '')
    .replace(/[ \t]*<interface\b[^>]*\/>[ \t]*\r?\n?/g, '')
    .replace(/[ \t]*<interface\b[^>]*>[\s\S]*?<\/interface>[ \t]*\r?\n?/g, '')
}
