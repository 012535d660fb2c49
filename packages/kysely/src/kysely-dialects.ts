/**
 * Dialects pglock refuses, told apart without SQL: over postgres.js 3.4 a statement on a closed
 * reserved connection never settles (porsager/postgres#1208), and kysely-postgres-js hides that
 * connection from pglock. postgres.js 4 fails it at once.
 */
import { readFileSync, realpathSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { UnsupportedError } from '@pglock/core'
import type { DatabaseConnection } from 'kysely'

/** The upstream issue users can follow. */
const POSTGRES_JS_ISSUE = 'https://github.com/porsager/postgres/issues/1208'

/** kysely-postgres-js's connection class, in every major from 3 to 5 (it is not exported, so pglock knows it by name). */
const KYSELY_POSTGRES_JS_CONNECTION = 'PostgresJSConnection'

/** The postgres.js version pglock refuses, read once per process: `mayRefuse()` runs on every lock. */
let refused: { readonly version: string | undefined } | undefined

function manifest(path: string): { name?: string; version?: string } | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as { name?: string; version?: string }
  } catch {
    return undefined
  }
}

/** The real directory of package `name` as Node finds it from `from`, read past its `exports` map, which need not offer `require`. */
function packageDir(from: string, name: string): string | undefined {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) {
    const found = join(dir, 'node_modules', name)
    if (manifest(join(found, 'package.json'))?.name === name) return realpathSync(found)
  }
  return undefined
}

/**
 * The version of the postgres.js that kysely-postgres-js loads, found from this package and else
 * from the working directory; `undefined` when either cannot be found. The first copy found wins.
 */
function readPostgresJsVersion(): string | undefined {
  const here = dirname(typeof __filename === 'string' ? __filename : fileURLToPath(import.meta.url))
  for (const from of [here, process.cwd()]) {
    const dialect = packageDir(from, 'kysely-postgres-js')
    if (dialect === undefined) continue
    const driver = packageDir(dialect, 'postgres')
    return driver === undefined ? undefined : manifest(join(driver, 'package.json'))?.version
  }
  return undefined
}

/** The postgres.js version kysely-postgres-js loads, when it is one pglock refuses. Reads the file system once per process. */
function refusedVersion(): string | undefined {
  refused ??= { version: refusable(readPostgresJsVersion()) }
  return refused.version
}

function refusable(version: string | undefined): string | undefined {
  return version !== undefined && Number(version.split('.')[0]) < 4 ? version : undefined
}

/**
 * Whether {@link refuseUnsettling} may refuse a connection here: kysely-postgres-js is installed
 * over postgres.js 3.x. When not, no connection needs checking.
 *
 * @example
 * ```ts
 * if (mayRefuse()) await connectionsOf(db)(async (connection) => refuseUnsettling(connection))
 * ```
 */
export function mayRefuse(): boolean {
  return refusedVersion() !== undefined
}

/**
 * Throws `UnsupportedError` when `connection` comes from kysely-postgres-js and that dialect loads
 * postgres.js 3.x. Sends nothing.
 *
 * @throws `UnsupportedError` naming the postgres.js version and porsager/postgres#1208.
 * @example
 * ```ts
 * refuseUnsettling(await connectionOf(db)) // before any lock statement
 * ```
 */
export function refuseUnsettling(connection: DatabaseConnection): void {
  if (Object.getPrototypeOf(connection)?.constructor?.name !== KYSELY_POSTGRES_JS_CONNECTION) return
  const version = refusedVersion()
  if (version === undefined) return
  throw new UnsupportedError(
    `@pglock/kysely does not lock through kysely-postgres-js over postgres.js ${version}: after a lost connection, ` +
      `postgres.js 3.4 never settles a statement on the reserved connection and throws an uncaught TypeError (${POSTGRES_JS_ISSUE}), ` +
      'so neither pglock nor Kysely could settle. Install postgres.js 4: `npm i postgres@^4`, and since kysely-postgres-js ' +
      'declares postgres ^3.4, add to package.json `"overrides": { "kysely-postgres-js": { "postgres": "$postgres" } }` ' +
      "(see @pglock/kysely's README, Install). Or lock with @pglock/postgres-js on the same sql",
  )
}
