/**
 * E-mail sink over SMTP (nodemailer). STARTTLS is required unless the config says otherwise:
 * a server that does not offer it, or whose certificate does not chain to the system CAs (or
 * `caFile`), gets nothing — an alert must not cross the network in clear. A refused
 * connection, a timeout or a 4xx reply is retried; a 5xx reply (bad recipient, auth refused)
 * is a rejection: dropped and logged, since resending cannot change the answer.
 */
import nodemailer, { type Transporter } from 'nodemailer'
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js'
import { errorMessage } from '../../common/errors.ts'
import { SinkRejectedError, SinkUnavailableError } from './errors.ts'
import type { AlertSink } from './sink.ts'
import type { AlertNotice } from './types.ts'

export interface EmailSinkInit {
  name: string
  host: string
  port: number
  /** Require STARTTLS. @default true */
  starttls?: boolean
  /** PEM the server's certificate must chain to (default: the system CAs). */
  ca?: string
  user?: string
  password?: string
  from: string
  to: string[]
  /** Connect, greeting and socket time limits. @default 10000 */
  timeoutMs?: number
}

export function subjectOf (n: AlertNotice): string {
  const tag = n.type === 'recovery' ? 'RESOLVED' : n.type === 'test' ? 'TEST' : n.severity === 'critical' ? 'CRITICAL' : n.severity === 'warning' ? 'WARNING' : 'INFO'
  return `[vmesh ${tag}] ${n.summary}`
}

export function textOf (n: AlertNotice): string {
  return [
    n.summary,
    '',
    `type:      ${n.type}`,
    `kind:      ${n.kind}`,
    `severity:  ${n.severity}`,
    `node:      ${n.node}`,
    ...(n.vm !== undefined ? [`vm:        ${n.vm}`] : []),
    ...(n.subject !== undefined ? [`subject:   ${n.subject}`] : []),
    `opened:    ${new Date(n.openedAtMs).toISOString()}`,
    `at:        ${new Date(n.atMs).toISOString()}`,
    ...(n.durationMs !== undefined ? [`lasted:    ${Math.round(n.durationMs / 1000)} s`] : []),
    `incident:  ${n.incident}`,
    '',
    JSON.stringify(n, null, 2)
  ].join('\n')
}

export class EmailSink implements AlertSink {
  readonly type = 'email'
  readonly name: string
  private readonly transport: Transporter<SMTPTransport.SentMessageInfo>

  constructor (private readonly init: EmailSinkInit) {
    this.name = init.name
    const t = init.timeoutMs ?? 10_000
    const tls = init.starttls !== false
    this.transport = nodemailer.createTransport({
      host: init.host,
      port: init.port,
      secure: false,
      requireTLS: tls,
      ignoreTLS: !tls,
      ...(init.user !== undefined && init.password !== undefined ? { auth: { user: init.user, pass: init.password } } : {}),
      tls: { ...(init.ca !== undefined ? { ca: init.ca } : {}), minVersion: 'TLSv1.2' },
      connectionTimeout: t,
      greetingTimeout: t,
      socketTimeout: t
    })
  }

  async send (n: AlertNotice, _signal?: AbortSignal): Promise<void> {
    try {
      await this.transport.sendMail({
        from: this.init.from,
        to: this.init.to,
        subject: subjectOf(n),
        text: textOf(n),
        headers: { 'X-Vmesh-Incident': n.incident, 'X-Vmesh-Kind': n.kind, 'X-Vmesh-Type': n.type }
      })
    } catch (err) {
      const code = (err as { responseCode?: number }).responseCode
      if (code !== undefined && code >= 500) throw new SinkRejectedError(this.name, `SMTP ${this.init.host}:${this.init.port} refused: ${errorMessage(err)}`, { cause: err })
      throw new SinkUnavailableError(this.name, `SMTP ${this.init.host}:${this.init.port}: ${errorMessage(err)}`, { cause: err })
    }
  }

  close (): void { this.transport.close() }
}
