// A strict consumer of @pglock/core alone: key hashing, the error classes, and an adapter of its
// own. It uses no driver, so on TypeScript 7 (no @types loaded by default) it shows that the
// core's declarations stand on the standard library alone.
import { InvalidKeyError, type LockId, PgLockError, pgLocksRow, resolveLockId, sha1Int64 } from '@pglock/core'
import { bindExecutor, type LockConnection, type LockExecutor } from '@pglock/core/adapter'

interface FakeClient {
  run(sql: string): Promise<Record<string, unknown>[]>
}

function connection(client: FakeClient): LockConnection<FakeClient> {
  return {
    db: client,
    owned: false,
    query: (sql) => client.run(sql),
    cancel: async () => undefined,
    onLost: () => () => undefined,
    release: () => undefined,
  }
}

const { createLock, withLock, tryWithLock } = bindExecutor(
  (client: FakeClient): LockExecutor<FakeClient> => ({ kind: 'connection', queueKey: client, connect: async () => connection(client) }),
)

export async function useCore(client: FakeClient): Promise<bigint> {
  const id: LockId = resolveLockId([7, 1001])
  const row: { objsubid: 1 | 2 } = pgLocksRow(id)
  const value = await withLock(client, 'k', async ({ db, signal }) => {
    signal.throwIfAborted()
    return (await db.run('SELECT 1')).length
  })
  const run = await tryWithLock(client, 1n, () => value)
  {
    await using held = await createLock(client, 'k').acquire()
    console.log(held.isHeld, row.objsubid, run.acquired)
  }
  try {
    resolveLockId(1.5)
  } catch (error) {
    if (error instanceof InvalidKeyError && error.code === 'INVALID_KEY') console.log(error.key)
    else if (error instanceof PgLockError) throw error
  }
  return sha1Int64('shared-identifier')
}
