/**
 * Structured JSON logs (pino) to stdout. Services get a child logger with their name so one
 * `jq 'select(.svc=="membership")'` follows one service.
 */
import { pino, type Logger } from 'pino'

export type { Logger }

export function createLogger (opts: { level: string, node: string, destination?: number }): Logger {
  return pino({ level: opts.level, base: { node: opts.node }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: opts.destination ?? 1, sync: true }))
}

export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
