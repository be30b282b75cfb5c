/**
 * libp2p protocol ID of a replication session: one stream per (VM, target) carrying the control
 * messages of this folder interleaved with protocol/delta generation frames.
 */
export const REPLICATION_PROTOCOL = '/vmesh/replication/1.1.0'

/**
 * The previous version: the same messages without hello's retention (flag bit 1, which a 1.0.0
 * peer refuses). Targets handle both; sources dial REPLICATION_PROTOCOLS, newest first, so
 * multistream-select settles on 1.0.0 with an older target, and then leave retention out.
 */
export const REPLICATION_PROTOCOL_1_0 = '/vmesh/replication/1.0.0'

/** Every replication protocol ID this release speaks, newest first (the dial order). */
export const REPLICATION_PROTOCOLS: readonly string[] = Object.freeze([REPLICATION_PROTOCOL, REPLICATION_PROTOCOL_1_0])

/** Whether a stream negotiated on `protocol` may carry hello's retention (unknown: a fake or in-process stream of this release). */
export function helloCarriesRetention (protocol: string | undefined): boolean {
  return protocol !== REPLICATION_PROTOCOL_1_0
}
