/**
 * libp2p protocol ID of status summaries: every node tells its connected peers, about once a
 * second and at once when something changes, a small summary of its own status (its view of
 * the members, the VMs it owns, sources or holds replicas of), so any node can show the whole
 * mesh (`vmesh status --mesh`, the dashboard's mesh page). One message per frame.
 */
export const STATUS_SUMMARY_PROTOCOL = '/vmesh/status-summary/1.0.0'

/** Version carried in every message (`v`). */
export const STATUS_SUMMARY_WIRE_VERSION = 1

/** Largest encoded message accepted (64 members and 256 VMs with 8 targets each fit). */
export const STATUS_SUMMARY_MAX_MESSAGE_BYTES = 256 * 1024

/** Bounds of the lists in a summary; an encoder trims to them, a decoder refuses beyond them. */
export const STATUS_SUMMARY_MAX_MEMBERS = 64
export const STATUS_SUMMARY_MAX_VMS = 256
export const STATUS_SUMMARY_MAX_TARGETS = 16
