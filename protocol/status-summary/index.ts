export * from './ids.ts'
export type * from './types.ts'
export * from './codec.ts'
export * from './errors.ts'
