/**
 * The README's layer rules as dependency-cruiser rules (`npm run lint:imports`; also run by
 * `npm test` through test/unit/architecture/imports.test.ts).
 *
 * Layers, lowest first; a layer imports only the ones before it:
 *   common ← config ← protocol ← storage ← daemon ← bin
 * test/ and bench/ may import any layer; no layer imports test/ or bench/, and bench/ does not
 * borrow from the demo (daemon/demo). Inside storage/, changes/ (change sources and the
 * tracker) sits on top of manifest/, dirty/, formats/ and workers/, never below them; dirty/
 * sits on manifest/. No import circle anywhere, type-only imports included.
 */
const LAYERS = ['common', 'config', 'protocol', 'storage', 'daemon', 'bin']

/** One rule per layer: it must not import any layer above it. */
const layerRules = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${layer}`,
  comment: `${layer}/ is below ${LAYERS.slice(i + 1).join(', ')}: it must not import them (README, "Layers and their rules")`,
  severity: 'error',
  from: { path: `^${layer}/` },
  to: { path: `^(${LAYERS.slice(i + 1).join('|')})/` }
}))

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'no import circle (type-only imports count: a circle of types is still one design knot)',
      severity: 'error',
      from: {},
      to: { circular: true }
    },
    ...layerRules,
    {
      name: 'no-test-or-bench-in-product',
      comment: 'shipped code must not import tests, test helpers or benchmarks',
      severity: 'error',
      from: { path: `^(${LAYERS.join('|')})/` },
      to: { path: '^(test|bench)/' }
    },
    {
      name: 'bench-not-from-demo',
      comment: 'the demo is an app, not a library: benchmarks take what they share with it from a real module (or test/helpers)',
      severity: 'error',
      from: { path: '^bench/' },
      to: { path: '^daemon/demo/' }
    },
    {
      name: 'storage-changes-on-top',
      comment: 'storage/changes builds on formats, manifest, dirty and workers; none of them may import it',
      severity: 'error',
      from: { path: '^storage/(formats|manifest|dirty|workers|replica)/' },
      to: { path: '^storage/changes/' }
    },
    {
      name: 'storage-manifest-below-dirty',
      comment: 'storage/dirty keeps its bitmaps in the manifest database; the manifest knows nothing of dirty maps',
      severity: 'error',
      from: { path: '^storage/manifest/' },
      to: { path: '^storage/dirty/' }
    },
    {
      name: 'no-sockets-or-processes-below-daemon',
      comment: 'only daemon/ owns sockets and processes (README); the platform module (common/platform/) may run the OS tool that reads and sets a secret file\'s ACL (icacls), since loading the config checks it',
      severity: 'error',
      from: { path: '^(common/(?!platform/)|config/|protocol/|storage/)' },
      to: { dependencyTypes: ['core'], path: '^(node:)?(child_process|net|dgram|http|https|http2|tls|cluster)$' }
    },
    {
      name: 'protocol-no-disk',
      comment: 'protocol/ is codecs and message types: no disk (README)',
      severity: 'error',
      from: { path: '^protocol/' },
      to: { dependencyTypes: ['core'], path: '^(node:)?fs(/promises)?$' }
    }
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.js', '.mjs', '.cjs', '.json']
    },
    reporterOptions: {
      text: { highlightFocused: true }
    }
  }
}
