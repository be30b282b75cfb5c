/**
 * libp2p protocol ID of a replication session: one stream per (VM, target) carrying the control
 * messages of this folder interleaved with protocol/delta generation frames.
 *
 * 1.2.0 adds haveQuery / haveAnswer (the target's content index); 1.1.0 added hello's retention.
 */
export const REPLICATION_PROTOCOL = '/vmesh/replication/1.2.0'

/**
 * The previous version: the same messages without haveQuery / haveAnswer, whose frame types a
 * 1.1.0 peer does not know (its decoder would abort the stream). A source sends them only where
 * 1.2.0 was negotiated.
 */
export const REPLICATION_PROTOCOL_1_1 = '/vmesh/replication/1.1.0'

/**
 * The oldest version still spoken: also without hello's retention (flag bit 1, which a 1.0.0
 * peer refuses). Targets handle every version; sources dial REPLICATION_PROTOCOLS, newest first,
 * so multistream-select settles on the newest an older target speaks, and the source then leaves
 * out what that version cannot carry.
 */
export const REPLICATION_PROTOCOL_1_0 = '/vmesh/replication/1.0.0'

/** Every replication protocol ID this release speaks, newest first (the dial order). */
export const REPLICATION_PROTOCOLS: readonly string[] = Object.freeze([REPLICATION_PROTOCOL, REPLICATION_PROTOCOL_1_1, REPLICATION_PROTOCOL_1_0])

/**
 * The IDs a node speaks: 1.2.0 (haveQuery, the content index) only where `contentIndex.enabled`
 * — offering blocks by hash costs a second hash pass and answer waits that a LAN seed pays for
 * (measured 10.9–12.7 s against 9.3–9.9 s for 1 GiB over loopback), so it is an opt-in for
 * WAN sites; without it, sources and targets speak 1.1.0 as before.
 */
export function replicationProtocols (contentIndex: boolean): readonly string[] {
  return contentIndex ? REPLICATION_PROTOCOLS : REPLICATION_PROTOCOLS.filter(p => p !== REPLICATION_PROTOCOL)
}

/** Whether a stream negotiated on `protocol` may carry hello's retention (unknown: a fake or in-process stream of this release). */
export function helloCarriesRetention (protocol: string | undefined): boolean {
  return protocol !== REPLICATION_PROTOCOL_1_0
}

/** Whether a stream negotiated on `protocol` may carry haveQuery / haveAnswer (unknown: a fake or in-process stream of this release). */
export function streamCarriesHaveQuery (protocol: string | undefined): boolean {
  return protocol !== REPLICATION_PROTOCOL_1_0 && protocol !== REPLICATION_PROTOCOL_1_1
}
