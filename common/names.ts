/**
 * The names that become folder names and wire fields: one rule each, shared by the config
 * schema, the wire codecs and the services that make paths from them.
 */

/** A node name: 1-63 letters, digits, ".", "_" or "-", starting with a letter or digit. */
export const NODE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/

/**
 * A VM name: also spaces and parentheses (common on Hyper-V: "SQL 2019 (prod)"), never a path
 * separator or a trailing space or dot (Windows drops those from folder names).
 */
export const VM_NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9 ._()-]{0,61}[A-Za-z0-9_()-])?$/
