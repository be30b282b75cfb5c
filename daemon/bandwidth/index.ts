/** Bandwidth control: token buckets, per-peer limiters, schedules and the service that ties them to the config. */
export * from './bucket.ts'
export * from './errors.ts'
export * from './limiter.ts'
export * from './schedule.ts'
export * from './service.ts'
export * from './throttle.ts'
export * from './scan-budget.ts'
