import { type KeyHash, pgLocksRow, resolveLockId } from '@pglock/pg'

/**
 * The lines `pglock hash` prints: for each key, the int64 id Postgres sees for it (what
 * `pg_advisory_lock` receives), or with `json` one JSON object per key that also gives the
 * `pg_locks` columns the id shows in.
 *
 * @example
 * ```ts
 * hashLines(['shared-identifier'], 'sha1-int64', false) // ['-464685171814670893']
 * ```
 */
export function hashLines(keys: readonly string[], keyHash: KeyHash, json: boolean): string[] {
  return keys.map((key) => {
    const id = resolveLockId(key, { keyHash })
    if (id.kind !== 'int64') throw new Error('a string key always hashes to an int64')
    if (!json) return String(id.value)
    return JSON.stringify({ key, keyHash, lockId: String(id.value), ...pgLocksRow(id) })
  })
}
