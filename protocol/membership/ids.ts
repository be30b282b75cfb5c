/** libp2p protocol ID of the SWIM/Lifeguard failure detector's messages (one message per stream frame). */
export const MEMBERSHIP_PROTOCOL = '/vmesh/membership/1.0.0'
