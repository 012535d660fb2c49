/**
 * The exit codes of `pglock` itself. `pglock run` otherwise exits with its command's code, or
 * 128 + the signal number when a signal killed the command, as shells report it. The codes come
 * from `sysexits.h` and from the shells' and `timeout(1)`'s conventions, so that scripts can
 * tell a busy lock from a failed command.
 *
 * @example
 * ```ts
 * if (!acquired) return EXIT.busy
 * ```
 */
export const EXIT = Object.freeze({
  /** Bad arguments: an unknown option, a missing key or command, a malformed duration. */
  usage: 2,
  /** The database could not be reached or refused a statement (`EX_UNAVAILABLE`). */
  unavailable: 69,
  /** A bug in pglock: an error it did not expect (`EX_SOFTWARE`). */
  software: 70,
  /** The lock was lost while the command ran; the command was terminated. */
  lost: 74,
  /** `--try` and another session holds the lock (`EX_TEMPFAIL`: try again later). */
  busy: 75,
  /** `--timeout` elapsed before the lock was granted (as `timeout(1)`). */
  timeout: 124,
  /** The command was found but could not be run (as the shells). */
  cannotRun: 126,
  /** The command was not found (as the shells). */
  notFound: 127,
})

/**
 * An error that ends `pglock` with `code`, its message printed as `pglock: <message>`.
 *
 * @example
 * ```ts
 * throw new ExitError(EXIT.unavailable, 'cannot connect to Postgres: connect ECONNREFUSED')
 * ```
 */
export class ExitError extends Error {
  readonly code: number
  /** The command whose `--help` to point at, for a usage error. */
  readonly command: string | undefined

  constructor(code: number, message: string, command?: string) {
    super(message)
    this.name = 'ExitError'
    this.code = code
    this.command = command
  }
}

/**
 * A usage error of `command` (exit code 2); the message is followed by a pointer to its `--help`.
 *
 * @example
 * ```ts
 * throw usage('run', 'missing KEY')
 * ```
 */
export function usage(command: string | undefined, message: string): ExitError {
  return new ExitError(EXIT.usage, message, command ?? '')
}

/**
 * A key, option or value named in a message, in double quotes as the library's errors quote keys
 * (control characters escaped, so that a message stays on one line).
 *
 * @example
 * ```ts
 * quote('nightly') // '"nightly"'
 * ```
 */
export function quote(text: string): string {
  return JSON.stringify(text)
}
