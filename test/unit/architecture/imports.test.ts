/**
 * The import rules (.dependency-cruiser.cjs: the README's layers, no circles) hold for the tree,
 * and each rule does fire: a small fixture tree breaks every rule once. The tree check runs
 * exactly `npm run lint:imports` (arguments taken from package.json) and fails with its report.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tempDir } from '../../helpers/tmp.ts'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const DEPCRUISE = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs')
const CONFIG = join(ROOT, '.dependency-cruiser.cjs')

function depcruise (args: string[], cwd: string): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [DEPCRUISE, ...args], { cwd, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1
      resolve({ code, stdout, stderr })
    })
  })
}

describe('import rules (dependency-cruiser)', function () {
  this.timeout(120_000)

  it('the tree has no import circle and no import against the layers (npm run lint:imports)', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    const [bin, ...args] = (pkg.scripts['lint:imports'] ?? '').split(/\s+/).filter(s => s !== '')
    assert.equal(bin, 'depcruise', 'lint:imports runs dependency-cruiser')
    const r = await depcruise(args, ROOT)
    assert.equal(r.code, 0, `npm run lint:imports failed:\n${r.stdout}${r.stderr}`)
  })

  it('every rule fires on a tree that breaks it', async () => {
    const { dir, cleanup } = await tempDir('vmesh-imports-')
    try {
      const files: Record<string, string> = {
        'common/a.ts': "import '../config/a.ts'\n", // layer-common
        'config/a.ts': "import '../protocol/a.ts'\n", // layer-config
        'protocol/a.ts': "import '../storage/a.ts'\nimport 'node:fs'\n", // layer-protocol, protocol-no-disk
        'storage/a.ts': "import '../daemon/a.ts'\nimport 'node:child_process'\n", // layer-storage, no-sockets-or-processes-below-daemon
        'daemon/a.ts': "import '../bin/a.ts'\nimport '../test/a.ts'\n", // layer-daemon, no-test-or-bench-in-product
        'bin/a.ts': 'export {}\n',
        'test/a.ts': 'export {}\n',
        'bench/a.ts': "import '../daemon/demo/a.ts'\n", // bench-not-from-demo
        'daemon/demo/a.ts': 'export {}\n',
        'storage/dirty/a.ts': "import '../changes/a.ts'\n", // storage-changes-on-top
        'storage/changes/a.ts': 'export {}\n',
        'storage/manifest/a.ts': "import '../dirty/a.ts'\n", // storage-manifest-below-dirty
        'daemon/x/a.ts': "import '../y/a.ts'\n", // no-circular
        'daemon/y/a.ts': "import '../x/a.ts'\n",
        // allowed: each layer imports the ones below it; test/ and bench/ import anything but the demo (bench)
        'config/ok.ts': "import '../common/a.ts'\n",
        'protocol/ok.ts': "import '../config/a.ts'\nimport '../common/a.ts'\n",
        'storage/ok.ts': "import '../protocol/a.ts'\nimport 'node:fs'\n",
        'storage/changes/ok.ts': "import '../manifest/a.ts'\nimport '../dirty/a.ts'\n",
        'daemon/ok.ts': "import '../storage/changes/a.ts'\nimport '../daemon/demo/a.ts'\nimport 'node:net'\n",
        'bin/ok.ts': "import '../daemon/a.ts'\n",
        'test/ok.ts': "import '../daemon/demo/a.ts'\nimport '../bench/a.ts'\nimport '../bin/a.ts'\n",
        'bench/ok.ts': "import '../daemon/a.ts'\nimport '../test/a.ts'\n",
        'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', allowImportingTsExtensions: true, noEmit: true } })
      }
      for (const [path, text] of Object.entries(files)) {
        await mkdir(dirname(join(dir, path)), { recursive: true })
        await writeFile(join(dir, path), text)
      }
      const folders = ['common', 'config', 'protocol', 'storage', 'daemon', 'bin', 'bench', 'test']
      const failing = await depcruise(['--config', CONFIG, '--output-type', 'err', ...folders], dir)
      assert.notEqual(failing.code, 0, `violations make the check fail:\n${failing.stdout}${failing.stderr}`)
      // the json reporter always exits 0; it names each violation's rule
      const r = await depcruise(['--config', CONFIG, '--output-type', 'json', ...folders], dir)
      assert.equal(r.code, 0, r.stderr)
      const report = JSON.parse(r.stdout) as { summary: { violations: Array<{ rule: { name: string }, from: string, to: string }> } }
      const fired = new Set(report.summary.violations.map(v => v.rule.name))
      const config = (await import(CONFIG)) as { default: { forbidden: Array<{ name: string }> } }
      assert.deepEqual([...fired].sort(), config.default.forbidden.map(f => f.name).sort(), JSON.stringify(report.summary.violations, null, 1))
      // and nothing fires on what the layers allow
      assert.deepEqual(report.summary.violations.filter(v => v.from.endsWith('/ok.ts')), [])
    } finally {
      await cleanup()
    }
  })
})
