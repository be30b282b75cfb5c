/**
 * The shipped Prometheus rules and Grafana dashboard refer only to metrics the daemon exports
 * (its registry's own text, not a list kept by hand), and parse. `promtool check rules` runs
 * too where promtool is installed (Debian: the prometheus package).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import { createMetrics } from '../../../daemon/metrics/registry.ts'

const ROOT = join(import.meta.dirname, '..', '..', '..')
const RULES = join(ROOT, 'packaging', 'prometheus', 'vmesh-rules.yml')
const DASHBOARD = join(ROOT, 'packaging', 'grafana', 'vmesh-dashboard.json')
/** Series Prometheus makes itself, not the daemon. */
const PROMETHEUS_OWN = new Set(['up'])

async function exported (): Promise<Set<string>> {
  const text = await createMetrics({ labels: { node: 'a' } }).text()
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map(m => m[1] as string))
}

/** Metric names in a PromQL expression: identifiers followed by `{`, `[` or standing alone, minus functions and keywords. */
function metricsIn (expr: string): string[] {
  const noStrings = expr.replace(/"[^"]*"/g, '""')
  const words = [...noStrings.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b\s*(\(?)/g)].filter(m => m[2] !== '(').map(m => m[1] as string)
  const keywords = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'bool', 'offset', 'vector', 's', 'm', 'h', 'd'])
  return words.filter(w => !keywords.has(w) && /_/.test(w) || w === 'up').filter(w => !/^(job|state|peer|vm|target|node|scope|source|instance)$/.test(w))
}

describe('packaging: Prometheus rules and Grafana dashboard', () => {
  it('the rules parse, each has an expr, and every metric they use is exported', async () => {
    const have = await exported()
    const doc = parse(await readFile(RULES, 'utf8')) as { groups: Array<{ name: string, rules: Array<{ alert: string, expr: string, labels?: Record<string, string>, annotations?: Record<string, string> }> }> }
    const rules = doc.groups.flatMap(g => g.rules)
    assert.ok(rules.length >= 5)
    for (const r of rules) {
      assert.ok(typeof r.alert === 'string' && typeof r.expr === 'string' && r.annotations?.summary !== undefined, JSON.stringify(r))
      const used = metricsIn(r.expr)
      assert.ok(used.length > 0, `${r.alert}: no metric found in ${r.expr}`)
      for (const m of used) assert.ok(have.has(m) || PROMETHEUS_OWN.has(m), `${r.alert} uses ${m}, which the daemon does not export`)
    }
  })

  it('the dashboard parses and every panel query uses exported metrics', async () => {
    const have = await exported()
    const d = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Array<{ title: string, targets: Array<{ expr: string }> }>, templating: { list: Array<{ query: string }> } }
    const exprs = [...d.panels.flatMap(p => p.targets.map(t => ({ where: p.title, expr: t.expr }))), ...d.templating.list.filter(v => v.query.startsWith('label_values')).map(v => ({ where: 'variable', expr: v.query.replace(/^label_values\(([^,]+),.*$/, '$1') }))]
    assert.ok(exprs.length >= 10)
    for (const { where, expr } of exprs) {
      for (const m of metricsIn(expr)) assert.ok(have.has(m), `${where} uses ${m}, which the daemon does not export`)
    }
  })

  it('promtool accepts the rules (where promtool is installed)', async function () {
    try { await promisify(execFile)('promtool', ['--version']) } catch { this.skip() }
    const { stdout } = await promisify(execFile)('promtool', ['check', 'rules', RULES])
    assert.match(stdout, /SUCCESS/)
  })
})
