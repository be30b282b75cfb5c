/** Block manifests in LevelDB. */
export * from './db.ts'
export * from './manifest.ts'
