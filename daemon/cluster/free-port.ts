/**
 * Ports for daemons a test or the demo starts later.
 *
 * Why not `listen(0)`: port 0 hands out a port from the kernel's ephemeral range, the same range
 * every outgoing connection draws its local port from. Between the choice and the daemon's
 * listen, the other daemons keep dialing peers that are not up yet — one refused connection,
 * one ephemeral port each — and one of them can hold the chosen port when the daemon binds it
 * (EADDRINUSE; the capacity test's w1 in CI, stop 19). A port below the ephemeral range is never
 * given to an outgoing connection, so one found free there stays free unless someone binds it on
 * purpose. Ports handed out by this process are not handed out twice.
 */

import { createServer } from 'node:net'
import { readFileSync } from 'node:fs'
import { randomInt } from 'node:crypto'

/** The kernel's ephemeral range: Linux's sysctl, else the IANA range Windows and macOS use. */
export function ephemeralRange (): { low: number, high: number } {
  try {
    const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (low !== undefined && high !== undefined && Number.isInteger(low) && Number.isInteger(high) && low > 1024) return { low, high }
  } catch {}
  return { low: 49152, high: 65535 }
}

const handedOut = new Set<number>()

async function bindable (port: number, host: string): Promise<boolean> {
  return await new Promise(resolve => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen(port, host, () => s.close(() => resolve(true)))
  })
}

/** A free port on `host` outside the ephemeral range (see the module comment). */
export async function freePort (host = '127.0.0.1'): Promise<number> {
  const { low } = ephemeralRange()
  const from = Math.max(1025, Math.min(10_000, low - 4096))
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = randomInt(from, low)
    if (handedOut.has(port)) continue
    if (await bindable(port, host)) { handedOut.add(port); return port }
  }
  throw new Error(`no free port in ${from}–${low - 1} on ${host} after 200 attempts`)
}
