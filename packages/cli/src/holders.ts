import { type KeyHash, type LockHolder, listHolders } from '@pglock/pg'
import { connect, describeError, disconnect } from './connection.js'
import { EXIT, ExitError, quote } from './exit-codes.js'

/** What `pglock holders` was asked to list. */
export interface HoldersOptions {
  readonly keys: readonly string[] | undefined
  readonly keyHash: readonly KeyHash[]
  readonly url: string | undefined
  readonly json: boolean
}

/**
 * The holders and waiters of advisory locks in the current database, as `pglock holders`
 * prints them: a table, or with `json` a JSON array (ids as strings, times in ISO 8601).
 *
 * @example
 * ```ts
 * console.log(await holdersText({ keys: ['nightly'], keyHash: ['sha1-int64'], url: undefined, json: false }))
 * ```
 */
export async function holdersText(options: HoldersOptions): Promise<string> {
  const client = await connect(options.url, 'pglock holders')
  try {
    let holders: LockHolder[]
    try {
      holders = await listHolders(client, { keys: options.keys, keyHash: options.keyHash })
    } catch (error) {
      throw new ExitError(EXIT.unavailable, `cannot list the lock holders: ${describeError(error)}`)
    }
    if (options.json) return JSON.stringify(holders.map(toJson), null, 2)
    if (holders.length === 0) return none(options.keys)
    return table(holders, options.keys !== undefined)
  } finally {
    await disconnect(client)
  }
}

function toJson(holder: LockHolder): Record<string, unknown> {
  return {
    lockId: typeof holder.lockId === 'bigint' ? String(holder.lockId) : holder.lockId,
    key: typeof holder.key === 'bigint' ? String(holder.key) : (holder.key ?? null),
    mode: holder.mode,
    granted: holder.granted,
    waitingSince: holder.waitingSince?.toISOString() ?? null,
    pid: holder.pid,
    applicationName: holder.applicationName ?? null,
    clientAddress: holder.clientAddress ?? null,
    backendStart: holder.backendStart?.toISOString() ?? null,
    transactionStart: holder.transactionStart?.toISOString() ?? null,
    state: holder.state ?? null,
  }
}

const CONTROL = /\p{Cc}/gu

/** Says that nothing was found, and for which keys: another lock's holders may well exist. */
function none(keys: readonly string[] | undefined): string {
  if (keys === undefined) return 'no advisory locks are held or awaited'
  return `no advisory lock is held or awaited for ${keys.map(quote).join(', ')}`
}

function table(holders: readonly LockHolder[], withKeys: boolean): string {
  const now = Date.now()
  const header = ['LOCK ID', ...(withKeys ? ['KEY'] : []), 'MODE', 'STATUS', 'PID', 'APPLICATION', 'CLIENT', 'STATE', 'BACKEND START']
  const rows = holders.map((h) => [
    typeof h.lockId === 'bigint' ? String(h.lockId) : h.lockId.join(','),
    ...(withKeys ? [String(h.key ?? '')] : []),
    h.mode,
    h.granted ? 'holds' : h.waitingSince ? `waits ${since(now - h.waitingSince.getTime())}` : 'waits',
    String(h.pid),
    h.applicationName ?? '',
    h.clientAddress ?? (h.backendStart ? 'local' : ''),
    h.state ?? '',
    h.backendStart?.toISOString().replace(/\.\d+Z$/, 'Z') ?? '',
  ])
  // another client's application_name is its own text: keep it on one line
  const cells = [header, ...rows].map((row) => row.map((cell) => cell.replace(CONTROL, '?')))
  const widths = header.map((_, column) => Math.max(...cells.map((row) => row[column]?.length ?? 0)))
  return cells
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
}

function since(ms: number): string {
  const seconds = Math.max(0, ms) / 1_000
  if (seconds < 60) return `${seconds.toFixed(1)}s`
  if (seconds < 3_600) return `${Math.floor(seconds / 60)}m${Math.floor(seconds % 60)}s`
  return `${Math.floor(seconds / 3_600)}h${Math.floor((seconds % 3_600) / 60)}m`
}
