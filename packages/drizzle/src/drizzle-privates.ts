import { UnsupportedError } from '@pglock/core'
import { is } from 'drizzle-orm'
import { PgDialect } from 'drizzle-orm/pg-core'
import * as drizzleVersion from 'drizzle-orm/version'

/**
 * Every Drizzle member pglock reads that drizzle-orm does not document, in one place. Each is
 * checked by shape where it is read; a drizzle-orm release without it fails with
 * `UnsupportedError` naming drizzle-orm and its version, before any SQL, rather than building a
 * `lease.db` that misbehaves. drizzle-orm 0.45 and 1.0 (release candidates 4 and 5) have them all.
 *
 * - `db.dialect`: the database's `PgDialect`, which holds its casing (0.45) or codecs (1.0). Drizzle
 *   builds its own `tx` and every session with it; pglock needs it for the same.
 * - `db._.session.options`: the session's logger and cache, which a session on a pinned connection
 *   must share.
 * - `tx._.session.client`: the driver client a `tx` runs on (a database exposes its client as
 *   the public `$client`; a `tx` does not).
 */

/** The installed drizzle-orm's version, as drizzle-orm publishes it in `drizzle-orm/version`. */
export function drizzleOrmVersion(): string {
  const version = (drizzleVersion as { readonly npmVersion?: unknown }).npmVersion
  return typeof version === 'string' ? version : 'unknown'
}

function missing(member: string, purpose: string): UnsupportedError {
  return new UnsupportedError(
    `@pglock/drizzle does not support drizzle-orm ${drizzleOrmVersion()}: it has no ${member}, which pglock reads ${purpose}; @pglock/drizzle supports drizzle-orm 0.45 and 1.0`,
  )
}

interface WithSession {
  readonly _: { readonly session: object }
}

/** `db.dialect`, checked to be a `PgDialect`. */
export function dialectOf(db: object): PgDialect {
  const dialect = (db as { readonly dialect?: unknown }).dialect
  if (!is(dialect, PgDialect)) throw missing('`dialect` (a PgDialect) on its databases', 'to build `lease.db` on the locked connection')
  return dialect
}

/** `db._.session.options`, checked to be an object. */
export function sessionOptionsOf(db: WithSession): object {
  const options = (db._.session as { readonly options?: unknown }).options
  if (typeof options !== 'object' || options === null) {
    throw missing("`options` on a database's session", 'to give `lease.db` the logger and cache of the database')
  }
  return options
}

/** `tx._.session.client`, checked to be present; the driver adapter then checks it is its client. */
export function transactionClientOf(tx: WithSession): unknown {
  const client = (tx._.session as { readonly client?: unknown }).client
  if ((typeof client !== 'object' && typeof client !== 'function') || client === null) {
    throw missing("`client` on a transaction's session", 'to lock on the connection the transaction runs on')
  }
  return client
}
