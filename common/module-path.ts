/**
 * The sibling module `name` of the calling module, with the caller's own extension: `.ts`
 * when running from source under tsx, `.js` when running the compiled `dist/` tree. Used for
 * files that are started as processes or worker threads rather than imported.
 */
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'

export function siblingModule (importMetaUrl: string, relativeStem: string): URL {
  const ext = extname(fileURLToPath(importMetaUrl)) === '.js' ? '.js' : '.ts'
  return new URL(`${relativeStem}${ext}`, importMetaUrl)
}

/** True when the calling module is TypeScript source (needs tsx in child processes). */
export function isSource (importMetaUrl: string): boolean {
  return extname(fileURLToPath(importMetaUrl)) === '.ts'
}
