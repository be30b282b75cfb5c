#!/usr/bin/env node
// vmesh runs its TypeScript sources directly through tsx; registering it here (and passing
// --import tsx to worker threads) keeps one toolchain for the CLI, the daemon and the tests.
import { register } from 'tsx/esm/api'
register()
const { main } = await import('../daemon/cli/main.ts')
await main(process.argv)
