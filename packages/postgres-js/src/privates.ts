/**
 * Every undocumented postgres.js member pglock touches (3.4 and 4.x), each checked by shape where
 * first reached; a version that lacks one gets `UnsupportedError`. 4.x's public API is preferred.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { UnsupportedError } from '@pglock/core'
import type { BackendKey } from '@pglock/core/adapter'
import type { ReservedSql, TransactionSql } from 'postgres'

/** The generation of a postgres.js handle: 3 for 3.4, 4 for the rewritten 4.x. */
export type Generation = 3 | 4

/** A statement as `sql.unsafe()` returns it: a lazy promise that sends nothing until awaited. */
export type DriverQuery = PromiseLike<unknown> & { cancel(): unknown }

export type { BackendKey }

let version: string | undefined

/** The installed postgres.js version, as `postgres.js 4.2.0` (or `postgres.js` when unreadable). */
export function driverName(): string {
  version ??= readVersion()
  return version === '' ? 'postgres.js' : `postgres.js ${version}`
}

function readVersion(): string {
  try {
    const from = import.meta.url
    const entry = typeof from === 'string' ? createRequire(from).resolve('postgres') : require.resolve('postgres')
    for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
      try {
        const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
        if (manifest.name === 'postgres') return manifest.version ?? ''
      } catch {}
    }
  } catch {}
  return ''
}

/**
 * The error for a member this postgres.js lacks.
 *
 * @example
 * ```ts
 * throw unsupported('Query#state', 'cancel a lock wait on a connection that failed')
 * ```
 */
export function unsupported(member: string, purpose: string): UnsupportedError {
  return new UnsupportedError(
    `${driverName()} has no ${member}, which @pglock/postgres-js needs to ${purpose}; ` +
      'it supports postgres.js ^3.4.5 and ^4 (check for a newer @pglock/postgres-js)',
  )
}

function has(target: object, member: string): boolean {
  return member in target
}

const generations = new WeakMap<object, Generation>()

/**
 * Tells 3.4 (whose queries carry a `canceller`) from 4.x on a statement never sent, and checks
 * `state`, the backend key pglock cancels by. Known per `family` (a handle, or its `Sql`) once seen.
 *
 * @throws `UnsupportedError` when the statement lacks a member pglock reads.
 */
export function generationOf(handle: ReservedSql<any> | TransactionSql<any>, family: object = handle): Generation {
  let generation = generations.get(family)
  if (generation === undefined) {
    const probe = handle.unsafe('')
    generation = has(probe, 'canceller') ? 3 : 4
    if (!has(probe, 'state')) throw unsupported('Query#state', 'cancel a lock wait on a connection that failed')
    generations.set(family, generation)
  }
  return generation
}

/** The backend key of the connection `query` was queued on, or `null` before that. */
export function backendKeyOf(query: DriverQuery): BackendKey | null {
  const state = (query as { state?: unknown }).state
  if (state === null || state === undefined) return null
  const { pid, secret } = state as Partial<BackendKey>
  return typeof pid === 'number' && typeof secret === 'number' ? { pid, secret } : null
}

/**
 * Whether the statement was sent on a connection that got no BackendKeyData (RDS Proxy sends
 * none), so that no cancel can reach it; a statement not yet sent has no state and is not.
 */
export function cannotCancel(query: DriverQuery): boolean {
  const state = (query as { state?: unknown }).state
  return typeof state === 'object' && state !== null && typeof (state as Partial<BackendKey>).pid !== 'number'
}

/**
 * Keeps a statement's failure from failing the whole `sql.begin()`: pglock undoes it under its
 * savepoint. 3.4 and 4.0–4.1 hear it through `catch`, 4.2 through `watch(null, onRejected)`.
 */
export function keepErrorsOwn<Q extends DriverQuery>(query: Q): Q {
  const target = query as Q & { catch: unknown; watch?: unknown }
  target.catch = itself
  const watch = target.watch
  if (typeof watch === 'function') target.watch = watchKeepingErrors(watch as Watch)
  return query
}

type Watch = (this: unknown, onFulfilled: unknown, onRejected: unknown) => unknown

/** The `watch` made for postgres.js's own `watch` last seen: one postgres.js shares one across its statements. */
let keptWatch: { readonly of: Watch; readonly watch: Watch } | undefined

/**
 * A statement's `watch` that adds no error-only handler. Shared, and holding no statement: a
 * closure over each statement, set on it, kept V8's scavenger from freeing the statement with
 * its lock, and through it the transaction's lease and the whole lock went to old space.
 */
function watchKeepingErrors(of: Watch): Watch {
  if (keptWatch?.of !== of) {
    keptWatch = {
      of,
      watch(onFulfilled, onRejected) {
        return onFulfilled === null || onFulfilled === undefined ? this : of.call(this, onFulfilled, onRejected)
      },
    }
  }
  return keptWatch.watch
}

/** A statement's `catch` that adds no handler: postgres.js calls it as a method of the statement. */
function itself<T>(this: T): T {
  return this
}

// postgres.js 3.4

/** A 3.4 connection as `onexecute` gets it: `onclose` to hear it close, `terminate` to close it. */
export interface V3Connection {
  onclose?: OnClose | null | undefined
  terminate(): void
}

type OnClose = (error: unknown) => void
export type CloseHook = OnClose & { previous: OnClose | null | undefined; live: boolean }

/**
 * Query options with 3.4's `onexecute`. A connection without `terminate()` is passed on as an
 * `UnsupportedError` to fail with later: throwing inside 3.4's write would corrupt the connection.
 */
export function onexecuteOption(onexecute: (connection: V3Connection | UnsupportedError) => void): Readonly<Record<string, unknown>> {
  return {
    onexecute(connection: unknown) {
      onexecute(asV3Connection(connection))
      // anything else tells 3.4 that the connection is busy, and it queues the next statement
      return true
    },
  }
}

/** What 3.4 passes to `onexecute`, checked: a connection pglock can close, else the error to fail with. */
export function asV3Connection(connection: unknown): V3Connection | UnsupportedError {
  return typeof (connection as V3Connection | null)?.terminate === 'function'
    ? (connection as V3Connection)
    : unsupported('connection.terminate() in onexecute', 'watch and close a pinned connection')
}

function isCloseHook(handler: OnClose | null | undefined): handler is CloseHook {
  return typeof handler === 'function' && 'live' in handler
}

/** Who hears a 3.4 connection close, as a method: one fewer closure per pinned lock. */
export const CONNECTION_CLOSED: unique symbol = Symbol('pglock.connectionClosed')

export interface CloseListener {
  [CONNECTION_CLOSED](error: unknown): void
}

/** Listens for a 3.4 connection closing, keeping the `onclose` already there (`sql.begin()` sets one); {@link unhookClose} stops. */
export function hookClose(connection: V3Connection, listener: CloseListener): CloseHook {
  const hook = ((error: unknown) => {
    hook.previous?.(error)
    if (hook.live) listener[CONNECTION_CLOSED](error)
  }) as CloseHook
  hook.previous = connection.onclose
  hook.live = true
  connection.onclose = hook
  return hook
}

/** Takes `hook` off `connection`, and with it the hooks below that were stopped while it sat above them. */
export function unhookClose(connection: V3Connection, hook: CloseHook): void {
  hook.live = false
  if (connection.onclose !== hook) return
  let handler = hook.previous
  while (isCloseHook(handler) && !handler.live) handler = handler.previous
  connection.onclose = handler
}

/** What 3.4's canceller reads of a query: where it was sent, and whether it still runs. */
interface CancelTarget {
  readonly state: BackendKey | null
  readonly active: boolean
}

type Canceller = (query: CancelTarget) => Promise<void>

function cancellerOf(query: DriverQuery): Canceller | undefined {
  const canceller = (query as { canceller?: unknown }).canceller
  return typeof canceller === 'function' ? (canceller as Canceller) : undefined
}

/**
 * Cancels a 3.4 statement and resolves once the server has handled it: `query.cancel()` drops
 * that promise, so pglock calls the query's canceller itself while it has one.
 */
export async function cancelV3(query: DriverQuery): Promise<void> {
  const canceller = cancellerOf(query)
  if (canceller === undefined) {
    query.cancel()
    return
  }
  await canceller.call(query, query as unknown as CancelTarget)
}

/** Cancels a failed 3.4 connection's backend by the key read at failure (a reconnect overwrites it). */
export async function cancelV3Backend(query: DriverQuery, backend: BackendKey): Promise<void> {
  await cancellerOf(query)?.call(query, { state: backend, active: true })
}

// postgres.js 4.x

/** The connection a 4.x statement was placed on, as far as pglock uses it. */
interface V4Connection {
  destroy(error?: unknown): void
}

/** A 4.x lease (a `ReservedSql`'s or `TransactionSql`'s hold on a connection): `closed` rejects when its connection closes. */
export interface V4Lease {
  readonly closed: Promise<never>
  /** The error its connection closed with, set as `closed` rejects; `null` while open. */
  readonly error?: unknown
}

/** A 4.x pool connection as a statement sent on a lease carries it: named by `id`, `host` and `port`. */
export interface V4LeasedConnection extends V4Connection {
  readonly id: number
  readonly host: unknown
  readonly port: unknown
  /** The error it closed with, or `null` while open. */
  readonly closed: unknown
  readonly lease: V4Lease
}

/**
 * The leased connection a settled 4.x statement ran on, read without the `diagnostics_channel`s
 * (which, while subscribed, trace every query of the application); `undefined` when its shape differs.
 */
export function leasedConnectionOf(query: DriverQuery): V4LeasedConnection | undefined {
  const connection = (query as { connection?: unknown }).connection as Partial<V4LeasedConnection> | null | undefined
  if (typeof connection !== 'object' || connection === null) return undefined
  if (typeof connection.id !== 'number' || typeof connection.destroy !== 'function' || !('closed' in connection)) return undefined
  const lease = connection.lease as Partial<V4Lease> | null | undefined
  return typeof lease === 'object' && lease !== null && lease.closed instanceof Promise ? (connection as V4LeasedConnection) : undefined
}

/** Closes a 4.x statement's connection: `release()` would pool a session still holding a lock. */
export function destroyV4Connection(query: DriverQuery): void {
  const connection = (query as { connection?: unknown }).connection
  if (typeof (connection as V4Connection | undefined)?.destroy !== 'function') {
    throw unsupported('Query#connection.destroy()', 'close a connection whose lock state is unknown')
  }
  ;(connection as V4Connection).destroy()
}
