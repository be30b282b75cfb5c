/**
 * Everything that differs between Linux and Windows, in one place (see each file):
 * os.ts (which rules apply), fs.ts (durable rename, directory sync), secret.ts + icacls.ts
 * (secret files: mode bits or an ACL), process.ts (liveness, independent children, signals),
 * shell.ts (the shell for command templates and its quoting).
 */
export * from './os.ts'
export * from './errors.ts'
export * from './fs.ts'
export * from './icacls.ts'
export * from './secret.ts'
export * from './process.ts'
export * from './shell.ts'
