/**
 * libp2p protocol ID of a replication session: one stream per (VM, target) carrying the control
 * messages of this folder interleaved with protocol/delta generation frames.
 */
export const REPLICATION_PROTOCOL = '/vmesh/replication/1.0.0'
