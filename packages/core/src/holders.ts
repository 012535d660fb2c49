import { InvalidArgumentError, UnsupportedError } from './errors.js'
import type { LockExecutor, Row } from './executor.js'
import { checkKeyHash, type LockId, lockIdToken, pgLocksRow, resolveLockId } from './keys.js'
import type { KeyHash, LockKey, LockMode } from './types.js'

/**
 * Which advisory locks `listHolders` lists.
 *
 * @example
 * ```ts
 * await listHolders(pool, { keys: ['invoice:42', [7, 1001], 42n], keyHash: ['sha1-int64', 'postgres-lock-0.1'] })
 * ```
 */
export interface ListHoldersOptions {
  /**
   * List only the locks of these keys, and name each row's key. A string key is matched under
   * every hash of `keyHash`; numbers and bigints by value; pairs as pairs. An empty list
   * matches nothing (and sends no SQL).
   * @default undefined (every advisory lock of the current database)
   */
  readonly keys?: readonly LockKey[] | undefined
  /**
   * How string keys become lock ids. Give several to find a lock whichever hash its holder used,
   * such as both `'sha1-int64'` and `'postgres-lock-0.1'` while services move from one to the other.
   * @default 'sha1-int64'
   */
  readonly keyHash?: KeyHash | readonly KeyHash[] | undefined
}

/**
 * One backend holding or waiting for an advisory lock of the current database: a row of
 * `pg_locks` with what `pg_stat_activity` says of its backend.
 *
 * `pg_locks` is readable by every role, so the lock, mode, `granted`, `waitingSince` and `pid` are
 * always there. `pg_stat_activity` shows a role without `pg_read_all_stats` only
 * `applicationName` of other roles' backends: their `clientAddress`, `backendStart`,
 * `transactionStart` and `state` read `undefined`.
 *
 * @example
 * ```ts
 * const [holder, ...waiters] = await listHolders(pool, { keys: ['invoice:42'] })
 * // holder: { lockId: -2254116582631872048n, key: 'invoice:42', mode: 'exclusive', granted: true,
 * //   waitingSince: undefined, pid: 4711, applicationName: 'billing', clientAddress: '10.0.0.7',
 * //   backendStart: Date, transactionStart: undefined, state: 'idle' }
 * ```
 */
export interface LockHolder {
  /** The lock id: a bigint for the int64 form (every string and integer key), the two int32 of a pair key. */
  readonly lockId: bigint | readonly [number, number]
  /** The first of the `keys` you passed whose id is this lock's, or `undefined` when you passed none. */
  readonly key: LockKey | undefined
  /** `'shared'` for `ShareLock` in `pg_locks`, `'exclusive'` for `ExclusiveLock`. */
  readonly mode: LockMode
  /** `true` for a holder, `false` for a backend waiting for the lock. */
  readonly granted: boolean
  /**
   * When a waiter began to wait (`pg_locks.waitstart`); `undefined` for a holder, and for a
   * waiter in the instant before Postgres records it.
   */
  readonly waitingSince: Date | undefined
  /** The backend's process id, as `pg_backend_pid()` there reports it; `0` for a prepared transaction, as in `pg_blocking_pids()`. */
  readonly pid: number
  /** The backend's `application_name` (`''` when the client set none). */
  readonly applicationName: string | undefined
  /** The client's IP address; `undefined` over a Unix socket, or where the role may not see it. */
  readonly clientAddress: string | undefined
  /** When the backend's connection was opened. */
  readonly backendStart: Date | undefined
  /** When the backend's current transaction began; `undefined` outside one. */
  readonly transactionStart: Date | undefined
  /** `pg_stat_activity.state`: `'active'`, `'idle'`, `'idle in transaction'`, ... */
  readonly state: string | undefined
}

const OPTIONS: ReadonlySet<string> = new Set(['keys', 'keyHash'])

/**
 * Column names are lowercase single words so that a driver renaming columns (postgres.js
 * `transform`, Kysely's `CamelCasePlugin`) leaves them alone; times travel as epoch milliseconds
 * in text, which no driver's type parsers touch.
 */
const SELECT = `SELECT l.classid::text AS classid, l.objid::text AS objid, l.objsubid AS objsubid, l.mode AS mode,
       l.granted AS granted, (extract(epoch FROM l.waitstart) * 1000)::text AS waitstart, l.pid AS pid,
       a.application_name AS appname, host(a.client_addr) AS clientaddr,
       (extract(epoch FROM a.backend_start) * 1000)::text AS backendstart,
       (extract(epoch FROM a.xact_start) * 1000)::text AS xactstart, a.state AS state
  FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())`
const ORDER = '\n ORDER BY l.classid, l.objid, l.objsubid, l.granted DESC, l.waitstart, l.pid'

/** The keys to match, by the token of each lock id they name. */
type Wanted = Map<string, { readonly key: LockKey; readonly id: LockId }>

function hashesOf(keyHash: unknown): readonly KeyHash[] {
  if (keyHash === undefined) return DEFAULT_HASHES
  const hashes: readonly unknown[] = Array.isArray(keyHash) ? keyHash : [keyHash]
  if (hashes.length === 0) throw new InvalidArgumentError('keyHash must be a hash or a non-empty list of them, got []')
  return hashes.map(checkKeyHash)
}

const DEFAULT_HASHES: readonly KeyHash[] = ['sha1-int64']

/** Validates the options, and resolves every key under every hash; throws before any SQL. */
function wantedBy(options: unknown): Wanted | undefined {
  if (options === undefined) return undefined
  if (typeof options !== 'object' || options === null) {
    throw new InvalidArgumentError(`options must be an object, got ${options === null ? 'null' : typeof options}`)
  }
  for (const name in options) {
    if (!OPTIONS.has(name) && Object.hasOwn(options, name)) {
      throw new InvalidArgumentError(`unknown option ${JSON.stringify(name)}: expected one of ${[...OPTIONS].join(', ')}`)
    }
  }
  const { keys, keyHash } = options as ListHoldersOptions
  const hashes = hashesOf(keyHash)
  if (keys === undefined) return undefined
  if (!Array.isArray(keys)) throw new InvalidArgumentError(`keys must be an array of lock keys, got ${describe(keys)}`)
  const wanted: Wanted = new Map()
  for (const key of keys as readonly LockKey[]) {
    for (const each of typeof key === 'string' ? hashes : hashes.slice(0, 1)) {
      const id = resolveLockId(key, { keyHash: each })
      const token = lockIdToken(id)
      if (!wanted.has(token)) wanted.set(token, { key, id })
    }
  }
  return wanted
}

const describe = (value: unknown): string => (value === null ? 'null' : typeof value)

/** The statement, with the wanted ids as validated integer literals. */
function statementFor(wanted: Wanted | undefined): string {
  if (wanted === undefined) return SELECT + ORDER
  const rows = [...wanted.values()].map(({ id }) => {
    const { classid, objid, objsubid } = pgLocksRow(id)
    return `(${classid}::oid, ${objid}::oid, ${objsubid}::int2)`
  })
  return `${SELECT}\n   AND (l.classid, l.objid, l.objsubid) IN (${rows.join(', ')})${ORDER}`
}

function lockIdOf(row: Row): LockId {
  const classid = Number(row.classid)
  const objid = Number(row.objid)
  if (Number(row.objsubid) === 2) return { kind: 'pair', value: [classid | 0, objid | 0] }
  return { kind: 'int64', value: BigInt.asIntN(64, (BigInt(classid) << 32n) | BigInt(objid)) }
}

const text = (value: unknown): string | undefined => (value === null || value === undefined ? undefined : String(value))

function time(value: unknown): Date | undefined {
  const ms = value === null || value === undefined ? Number.NaN : Number(value)
  return Number.isFinite(ms) ? new Date(ms) : undefined
}

function holderOf(row: Row, wanted: Wanted | undefined): LockHolder {
  const id = lockIdOf(row)
  return {
    lockId: id.value,
    key: wanted?.get(lockIdToken(id))?.key,
    mode: row.mode === 'ShareLock' ? 'shared' : 'exclusive',
    granted: row.granted === true || row.granted === 't' || row.granted === 'true',
    waitingSince: time(row.waitstart),
    pid: Number(row.pid ?? 0),
    applicationName: text(row.appname),
    clientAddress: text(row.clientaddr),
    backendStart: time(row.backendstart),
    transactionStart: time(row.xactstart),
    state: text(row.state),
  }
}

/**
 * Lists the backends holding or waiting for advisory locks in the current database, in one
 * read-only statement on the handle `executor` describes. Adapters export it bound to their
 * driver, through `bindExecutor`. Options are checked before any SQL.
 *
 * @throws `InvalidArgumentError` for malformed options (an unknown `keyHash` too), `InvalidKeyError`
 * for a key that cannot name a lock, `UnsupportedError` for an executor without `query`.
 * @example
 * ```ts
 * const holders = await listHolders(pgExecutor(pool), { keys: ['invoice:42'] })
 * ```
 */
export async function listHolders(executor: LockExecutor<unknown>, options?: ListHoldersOptions): Promise<LockHolder[]> {
  const wanted = wantedBy(options)
  if (wanted !== undefined && wanted.size === 0) return []
  if (executor.query === undefined) throw new UnsupportedError('this adapter cannot run a statement on its handle to list lock holders')
  const rows = await executor.query(statementFor(wanted))
  return rows.map((row) => holderOf(row, wanted))
}
