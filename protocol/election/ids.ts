/** libp2p protocol ID of the ownership/election messages (one message per stream frame). */
export const ELECTION_PROTOCOL = '/vmesh/election/1.0.0'
