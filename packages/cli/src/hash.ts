import { type KeyHash, pgLocksRow, resolveLockId } from '@pglock/pg'

/**
 * What `pglock hash` prints: for each key, one line with the int64 id Postgres sees for it (what
 * `pg_advisory_lock` receives), or with `json` one JSON array, as `holders --json` prints, of an
 * object per key that also gives the `pg_locks` columns the id shows in.
 *
 * @example
 * ```ts
 * hashText(['shared-identifier'], 'sha1-int64', false) // '-464685171814670893'
 * ```
 */
export function hashText(keys: readonly string[], keyHash: KeyHash, json: boolean): string {
  const ids = keys.map((key) => {
    const id = resolveLockId(key, { keyHash })
    if (id.kind !== 'int64') throw new Error('a string key always hashes to an int64')
    return { key, id }
  })
  if (!json) return ids.map(({ id }) => String(id.value)).join('\n')
  const rows = ids.map(({ key, id }) => ({ key, keyHash, lockId: String(id.value), ...pgLocksRow(id) }))
  return JSON.stringify(rows, null, 2)
}
