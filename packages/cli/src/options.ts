import { type ParseArgsConfig, parseArgs } from 'node:util'
import type { KeyHash } from '@pglock/pg'
import { quote, usage } from './exit-codes.js'

type Options = NonNullable<ParseArgsConfig['options']>

/**
 * `parseArgs` in strict mode, its errors turned into usage errors of `command` (exit code 2).
 *
 * @example
 * ```ts
 * const { values, positionals } = parse('hash', argv, { json: { type: 'boolean' } })
 * ```
 */
export function parse<O extends Options>(command: string, args: string[], options: O) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true })
  } catch (error) {
    throw usage(command, describeParseError(error))
  }
}

function describeParseError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  const code = (error as { code?: string } | null)?.code
  // node's own wording goes on to explain `--` at length; the first sentence is what a Unix tool says
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION')
    return doubleQuoted(message.replace(/\. To specify a positional argument.*$/s, '').replace(/^Unknown/, 'unknown'))
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return doubleQuoted(message.replace(/^Option/, 'option'))
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') return doubleQuoted(message.replace(/^Unexpected/, 'unexpected'))
  return message
}

/** node quotes option names in single quotes; pglock's messages quote in double quotes, as the library's errors do. */
function doubleQuoted(message: string): string {
  return message.replace(/'([^']*)'/g, (_, inner: string) => quote(inner))
}

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }

/**
 * Milliseconds from a duration: `500ms`, `30s`, `1.5s`, `2m`, `1h`, or a plain number of
 * milliseconds. Anything else is a usage error naming `option`.
 *
 * @example
 * ```ts
 * parseDuration('run', '--timeout', '2m') // 120000
 * parseDuration('run', '--timeout', '250') // 250
 * ```
 */
export function parseDuration(command: string, option: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim())
  const ms = match ? Math.round(Number(match[1]) * (UNITS[match[2] ?? 'ms'] ?? Number.NaN)) : Number.NaN
  if (!Number.isSafeInteger(ms) || ms > 2 ** 31 - 1) {
    throw usage(command, `${option} takes a duration such as 500ms, 30s, 2m or a number of milliseconds, got ${quote(text)}`)
  }
  return ms
}

/**
 * The `--key-hash` value: `sha1-int64` (the default) or `postgres-lock-0.1`.
 *
 * @example
 * ```ts
 * parseKeyHash('hash', 'postgres-lock-0.1') // 'postgres-lock-0.1'
 * ```
 */
export function parseKeyHash(command: string, text: string | undefined): KeyHash {
  if (text === undefined || text === 'sha1-int64') return 'sha1-int64'
  if (text === 'postgres-lock-0.1') return 'postgres-lock-0.1'
  throw usage(command, `--key-hash must be sha1-int64 or postgres-lock-0.1, got ${quote(text)}`)
}
