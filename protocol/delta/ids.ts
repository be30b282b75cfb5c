/** libp2p protocol ID for streams that carry delta frames (one or more generations in sequence). */
export const DELTA_PROTOCOL = '/vmesh/delta/1.0.0'
