import { VmeshError } from '../common/errors.ts'

/** One problem in a config file, located by key path and (where known) line. */
export interface ConfigIssue {
  /** Dotted key path, e.g. `mesh.peers[1].id`. */
  path: string
  message: string
  line?: number
}

/** The config file does not exist or cannot be read. */
export class ConfigNotFoundError extends VmeshError {
  constructor (readonly file: string, options?: { cause?: unknown }) {
    super('ERR_CONFIG_NOT_FOUND', `${file}: cannot read config file`, options)
  }
}

/** The file is not valid YAML. */
export class ConfigParseError extends VmeshError {
  constructor (readonly file: string, readonly line: number | undefined, detail: string) {
    super('ERR_CONFIG_PARSE', `${file}${line !== undefined ? `:${line}` : ''}: invalid YAML: ${detail}`)
  }
}

/** The YAML parsed but does not satisfy the schema; `issues` lists every problem found. */
export class ConfigInvalidError extends VmeshError {
  constructor (readonly file: string, readonly issues: ConfigIssue[]) {
    super('ERR_CONFIG_INVALID', issues.map(i => `${file}${i.line !== undefined ? `:${i.line}` : ''}: ${i.path === '' ? '(top level)' : i.path}: ${i.message}`).join('\n'))
  }
}

/** A key file named by the config (identity, psk) is missing, unreadable, malformed or too open. */
export class ConfigKeyFileError extends VmeshError {
  constructor (readonly file: string, readonly key: string, readonly keyFile: string, detail: string, options?: { cause?: unknown }) {
    super('ERR_CONFIG_KEY_FILE', `${file}: ${key}: ${keyFile}: ${detail}`, options)
  }
}
