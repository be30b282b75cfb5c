/**
 * The allowlist. Only peer IDs named in the config get in, in either direction. The peer ID is
 * only known after the Noise handshake, so the decisive checks are the *Encrypted* hooks; dial
 * checks stop us wasting a handshake on a stranger. `allowed` is a live set so `vmesh reload`
 * can change it without restarting libp2p.
 */
import type { ConnectionGater, PeerId } from '@libp2p/interface'

export interface AllowlistGater extends ConnectionGater {
  /** Replaces the allowed set (used by reload). */
  setAllowed: (ids: Iterable<string>) => void
  isAllowed: (id: string) => boolean
}

export function allowlistGater (initial: Iterable<string>, onDenied?: (peer: string, direction: 'inbound' | 'outbound') => void): AllowlistGater {
  let allowed = new Set(initial)
  const deny = (peerId: PeerId, direction: 'inbound' | 'outbound'): boolean => {
    const id = peerId.toString()
    if (allowed.has(id)) return false
    onDenied?.(id, direction)
    return true
  }
  return {
    setAllowed: (ids) => { allowed = new Set(ids) },
    isAllowed: (id) => allowed.has(id),
    denyDialPeer: (peerId) => deny(peerId, 'outbound'),
    denyInboundEncryptedConnection: (peerId) => deny(peerId, 'inbound'),
    denyOutboundEncryptedConnection: (peerId) => deny(peerId, 'outbound'),
    denyInboundUpgradedConnection: (peerId) => deny(peerId, 'inbound'),
    denyOutboundUpgradedConnection: (peerId) => deny(peerId, 'outbound'),
    // only loopback/private transport addresses come from the config; nothing else is dialed
    denyDialMultiaddr: () => false,
    // as a relay: hold reservations for, and relay between, allowlisted peers only
    denyInboundRelayReservation: (peerId) => deny(peerId, 'inbound'),
    denyOutboundRelayedConnection: (source, target) => deny(source, 'inbound') || deny(target, 'outbound'),
    // through a relay: only an allowlisted relay, for an allowlisted peer (Noise checks it again)
    denyInboundRelayedConnection: (relay, remote) => deny(relay, 'inbound') || deny(remote, 'inbound')
  }
}
