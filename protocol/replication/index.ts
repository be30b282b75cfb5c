/** The replication control protocol: messages, codec, the combined delta + control stream, error codes. */
export * from './codec.ts'
export * from './error-codes.ts'
export * from './errors.ts'
export * from './ids.ts'
export * from './limits.ts'
export * from './messages.ts'
export * from './ranges.ts'
export * from './stream.ts'
