/**
 * Which operating system's rules apply. Code that behaves differently on Windows takes an
 * `OsKind` (or a dependency bag holding one) instead of reading `process.platform` deep
 * inside, so unit tests on Linux exercise the Windows paths by passing `'win32'`.
 * `hostOs` is the one place that reads the real platform; composition roots pass it down.
 */
export type OsKind = 'linux' | 'win32' | 'darwin' | 'other'

export function osKindOf (platform: string): OsKind {
  return platform === 'linux' || platform === 'win32' || platform === 'darwin' ? platform : 'other'
}

/** The platform this process runs on. */
export const hostOs: OsKind = osKindOf(process.platform)

/** POSIX-like: signals, mode bits, /bin/sh, directory fsync. */
export function isPosix (os: OsKind): boolean { return os !== 'win32' }
