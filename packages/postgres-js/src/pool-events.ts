/**
 * postgres.js 4.x's documented `diagnostics_channel`s: `postgres:query` names the connection a
 * query ran on, `postgres:pool` publishes its `close`. Subscribed only while pglock needs them.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel'

const QUERY_SETTLED = 'tracing:postgres:query:asyncEnd'
const POOL = 'postgres:pool'

/** Where a query ran: a connection id (unique within one loaded copy of postgres.js), its host and port. */
export interface ConnectionName {
  readonly id: number
  readonly host: string | null
  readonly port: number | null
}

interface QueryTrace {
  readonly connection?: unknown
  readonly host?: unknown
  readonly port?: unknown
  readonly result?: unknown
  readonly error?: unknown
}

interface PoolEvent {
  readonly event?: unknown
  readonly connection?: unknown
  readonly host?: unknown
  readonly port?: unknown
  readonly error?: unknown
}

/** The connection each query settled on, keyed by what it settled with, while pglock is naming. */
const ranOn = new WeakMap<object, ConnectionName>()
let naming = 0

function onQuerySettled(message: unknown): void {
  const { connection, host, port, result, error } = message as QueryTrace
  const outcome = error ?? result
  if (typeof connection !== 'number' || typeof outcome !== 'object' || outcome === null) return
  ranOn.set(outcome, {
    id: connection,
    host: typeof host === 'string' ? host : null,
    port: typeof port === 'number' ? port : null,
  })
}

/** Names the connections queries settle on until stopped; postgres.js traces only queries sent while someone listens. */
export function startNaming(): () => void {
  if (naming++ === 0) subscribe(QUERY_SETTLED, onQuerySettled)
  watchPool()
  let stopped = false
  return () => {
    if (stopped) return
    stopped = true
    if (--naming === 0) unsubscribe(QUERY_SETTLED, onQuerySettled)
    unwatchPool()
  }
}

/** The connection a query ran on, from the result it resolved to or the error it rejected with. */
export function nameOf(outcome: unknown): ConnectionName | undefined {
  return typeof outcome === 'object' && outcome !== null ? ranOn.get(outcome) : undefined
}

type CloseListener = (cause: unknown) => void

interface Watch {
  readonly name: ConnectionName
  readonly listener: CloseListener
}

interface Closed {
  readonly host: unknown
  readonly port: unknown
  readonly cause: unknown
}

const closeListeners = new Map<number, Set<Watch>>()
/** Connections seen closing lately, for a watch that begins just after its connection closed. */
const recentlyClosed = new Map<number, Closed>()
const RECENT_CLOSES = 64
let poolWatchers = 0

/** Ids count per loaded copy of postgres.js, so the host and port must match too where known. */
function names(closed: Closed, name: ConnectionName): boolean {
  return (name.host === null || closed.host === name.host) && (name.port === null || closed.port === name.port)
}

function onPoolEvent(message: unknown): void {
  const { event, connection, host, port, error } = message as PoolEvent
  if (event !== 'close' || typeof connection !== 'number') return
  const closed: Closed = { host, port, cause: error ?? new Error(`postgres.js connection ${connection} closed`) }
  recentlyClosed.set(connection, closed)
  if (recentlyClosed.size > RECENT_CLOSES) recentlyClosed.delete(recentlyClosed.keys().next().value as number)
  const watches = closeListeners.get(connection)
  if (watches === undefined) return
  for (const watch of [...watches]) {
    if (!names(closed, watch.name)) continue
    watches.delete(watch)
    watch.listener(closed.cause)
  }
  if (watches.size === 0) closeListeners.delete(connection)
}

function watchPool(): void {
  if (poolWatchers++ === 0) subscribe(POOL, onPoolEvent)
}

function unwatchPool(): void {
  if (--poolWatchers > 0) return
  unsubscribe(POOL, onPoolEvent)
  recentlyClosed.clear()
}

/** Calls `listener` once when the connection closes, or at once if it closed while pglock listened. */
export function onConnectionClose(name: ConnectionName, listener: CloseListener): () => void {
  const closed = recentlyClosed.get(name.id)
  if (closed !== undefined && names(closed, name)) {
    listener(closed.cause)
    return () => undefined
  }
  watchPool()
  const watch: Watch = { name, listener }
  let watches = closeListeners.get(name.id)
  if (watches === undefined) closeListeners.set(name.id, (watches = new Set()))
  watches.add(watch)
  let stopped = false
  return () => {
    if (stopped) return
    stopped = true
    const current = closeListeners.get(name.id)
    current?.delete(watch)
    if (current?.size === 0) closeListeners.delete(name.id)
    unwatchPool()
  }
}
