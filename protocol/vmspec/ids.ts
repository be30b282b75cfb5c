/**
 * libp2p protocol ID of VM-spec announcements: each VM's home node tells its peers the VM's
 * policy (home, replica targets in priority order, failover mode, start order, priority), so
 * replica holders and witnesses know VMs their own config does not list. One message per frame.
 */
export const VMSPEC_PROTOCOL = '/vmesh/vmspec/1.0.0'

/** Version carried in every message (`v`). */
export const VMSPEC_WIRE_VERSION = 1

/** Largest encoded message accepted (1000 specs fit with room to spare). */
export const VMSPEC_MAX_MESSAGE_BYTES = 256 * 1024
