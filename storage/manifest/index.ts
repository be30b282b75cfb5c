/** Block manifests in LevelDB. */
export * from './db.ts'
export * from './errors.ts'
export * from './group.ts'
export * from './manifest.ts'
export * from './stat.ts'
