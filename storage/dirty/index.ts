/** Per-target dirty maps. */
export * from './bitmap.ts'
export * from './dirty-maps.ts'
