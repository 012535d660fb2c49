import { type ChildProcess, fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { type ListHoldersOptions, type LockHolder, type LockKey, resolveLockId, sha1Int64 } from '@pglock/core'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from '../adapter.ts'
import { FaultProxy } from '../fault-proxy.ts'
import type { HolderWorkerMessage, HolderWorkerOptions } from '../holder-worker.ts'
import { describeFeature, scopesOf } from './helpers.ts'

const WORKER = fileURLToPath(new URL('../holder-worker.ts', import.meta.url))

/** A worker process holding (or waiting for) locks, as the tests drive it. */
interface Holder {
  /** its backend's `pg_backend_pid()`, as the worker read it */
  readonly pid: number
  readonly applicationName: string
  /** resolves once every lock of the worker is held */
  readonly held: Promise<void>
  /** releases its locks; resolves to the exit code */
  release(): Promise<number | null>
}

/** Starts a worker; resolves once it has reported its backend, before it takes any lock. */
function startHolder(options: Omit<HolderWorkerOptions, 'applicationName'>): Promise<Holder> {
  const applicationName = `pglock-h-${randomBytes(5).toString('hex')}`
  const child: ChildProcess = fork(WORKER, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, PGLOCK_HOLDER_WORKER: JSON.stringify({ ...options, applicationName }) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill()
  })
  const failed = exited.then((code) => Promise.reject(new Error(`holder worker exited with ${code} before it was ready`)))
  const message = (wanted: 'pid' | 'held') =>
    Promise.race([
      new Promise<HolderWorkerMessage>((resolve) => {
        const listener = (received: HolderWorkerMessage) => {
          if (!(wanted in received)) return
          child.off('message', listener)
          resolve(received)
        }
        child.on('message', listener)
      }),
      failed,
    ])
  const held = message('held').then(() => undefined)
  held.catch(() => undefined)
  return message('pid').then((reported) => ({
    pid: (reported as { pid: number }).pid,
    applicationName,
    held,
    release: () => {
      child.send('release')
      return exited
    },
  }))
}

const randomInt32 = (): number => randomBytes(4).readInt32BE(0)
/** An int64 beyond 2^53, so that it only survives as a bigint. */
const randomInt64 = (): bigint => randomBytes(8).readBigInt64BE(0) | (1n << 60n)

/** Runs `body` while `locks` are held, and releases every one of them however it ends. */
async function holding<T>(locks: readonly Promise<{ release(): Promise<boolean> }>[], body: () => Promise<T>): Promise<T> {
  const taken = await Promise.allSettled(locks)
  try {
    for (const each of taken) if (each.status === 'rejected') throw each.reason
    return await body()
  } finally {
    for (const each of taken) if (each.status === 'fulfilled') await each.value.release()
  }
}

const idOf = (key: LockKey, keyHash?: 'sha1-int64' | 'postgres-lock-0.1') =>
  resolveLockId(key, keyHash === undefined ? {} : { keyHash }).value

/**
 * `listHolders`: who holds and who waits for advisory locks, seen from another process's backends
 * and from every handle the adapter takes; keys matched under each hash; options checked before
 * any SQL; what a role without privileges sees. Part of {@link describeConformance}; callable
 * alone to run one feature.
 *
 * @example
 * ```ts
 * import { describeHolders } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeHolders(adapter)
 * ```
 */
export function describeHolders(adapter: AdapterUnderTest): void {
  const { caps, lib } = adapter
  describeFeature(adapter, ({ key, lockPid, observer, open, pid, url }) => {
    describe('listHolders', () => {
      const serverNow = async (): Promise<Date> => (await observer.query<{ now: Date }>('SELECT clock_timestamp() AS now'))[0]?.now as Date

      it('shows holders and a waiter in other OS processes, with their pids, keys, modes and since when the waiter waits', async () => {
        const pool = await open()
        const k = key('holder')
        const old = key('holder-0.1')
        const pair: [number, number] = [randomInt32(), randomInt32()]
        const big = randomInt64()
        const keys: LockKey[] = [k, old, pair, big]
        const options: ListHoldersOptions = { keys, keyHash: ['sha1-int64', 'postgres-lock-0.1'] }
        const holder = await startHolder({
          url,
          adapter: adapter.module,
          locks: [{ key: k }, { key: old, keyHash: 'postgres-lock-0.1', mode: 'shared' }, { key: pair }, { key: { int64: String(big) } }],
        })
        await holder.held
        const before = await serverNow()
        const waiter = await startHolder({ url, adapter: adapter.module, locks: [{ key: k }] })
        let rows: LockHolder[] = []
        await observer.until('the waiter shows with the time it began to wait', async () => {
          rows = await lib.listHolders(pool.db, options)
          return rows.some((row) => row.pid === waiter.pid && row.waitingSince !== undefined)
        })
        const after = await serverNow()

        const activity = await observer.query<{ pid: number; client: string | null; backend_start: Date }>(
          'SELECT pid, host(client_addr) AS client, backend_start FROM pg_stat_activity WHERE pid = ANY($1)',
          [[holder.pid, waiter.pid]],
        )
        const backendOf = (pid: number) => {
          const row = activity.find((each) => each.pid === pid)
          return { clientAddress: row?.client ?? undefined, backendStart: row?.backend_start }
        }
        const held = (lockId: LockHolder['lockId'], key: LockKey, mode: 'exclusive' | 'shared') => ({
          lockId,
          key,
          mode,
          granted: true,
          waitingSince: undefined,
          pid: holder.pid,
          applicationName: holder.applicationName,
          ...backendOf(holder.pid),
          transactionStart: undefined,
          state: 'idle',
        })
        expect(rows).toHaveLength(5)
        expect(rows).toEqual(
          expect.arrayContaining([
            held(idOf(k), k, 'exclusive'),
            held(idOf(old, 'postgres-lock-0.1'), old, 'shared'),
            held(pair, pair, 'exclusive'),
            held(big, big, 'exclusive'),
            {
              lockId: idOf(k),
              key: k,
              mode: 'exclusive',
              granted: false,
              waitingSince: expect.any(Date),
              pid: waiter.pid,
              applicationName: waiter.applicationName,
              ...backendOf(waiter.pid),
              transactionStart: expect.any(Date),
              state: 'active',
            },
          ]),
        )
        const waiting = rows.find((row) => !row.granted) as LockHolder
        expect(waiting.waitingSince?.getTime()).toBeGreaterThanOrEqual(before.getTime())
        expect(waiting.waitingSince?.getTime()).toBeLessThanOrEqual(after.getTime())
        expect(rows.indexOf(waiting), 'a waiter comes after the holder of its lock').toBeGreaterThan(
          rows.findIndex((row) => row.granted && row.key === k),
        )
        expect(await observer.holders(k)).toEqual([holder.pid])
        expect(await observer.waiters(k)).toEqual([waiter.pid])

        expect(await holder.release()).toBe(0)
        await waiter.held
        expect(await lib.listHolders(pool.db, options)).toEqual([
          expect.objectContaining({ pid: waiter.pid, granted: true, waitingSince: undefined }),
        ])
        expect(await waiter.release()).toBe(0)
        expect(await lib.listHolders(pool.db, options)).toEqual([])
      }, 30_000)

      it('names string keys under each hash it is given, and only under those', async () => {
        const pool = await open()
        const current = key('sha1')
        const old = key('postgres-lock-0.1')
        const keys = [current, old]
        const named = async (keyHash?: ListHoldersOptions['keyHash']) =>
          (await lib.listHolders(pool.db, keyHash === undefined ? { keys } : { keys, keyHash })).map((row) => [row.key, row.lockId])
        await holding(
          [lib.createLock(pool.db, current).acquire(), lib.createLock(pool.db, old, { keyHash: 'postgres-lock-0.1' }).acquire()],
          async () => {
            expect(await named()).toEqual([[current, idOf(current)]])
            expect(await named('postgres-lock-0.1')).toEqual([[old, idOf(old, 'postgres-lock-0.1')]])
            const both = [
              [current, idOf(current)],
              [old, idOf(old, 'postgres-lock-0.1')],
            ]
            expect(await named(['sha1-int64', 'postgres-lock-0.1'])).toEqual(expect.arrayContaining(both))
            expect(await named(['postgres-lock-0.1', (text) => sha1Int64(text)])).toEqual(expect.arrayContaining(both))
          },
        )
      })

      it('matches pairs as pairs and integer keys by value', async () => {
        const pool = await open()
        const pair: [number, number] = [randomInt32(), randomInt32()]
        // the int64 whose halves are the pair's: pg_locks tells them apart only by objsubid
        const twin = BigInt.asIntN(64, (BigInt(pair[0] >>> 0) << 32n) | BigInt(pair[1] >>> 0))
        const small = Number(randomBytes(6).readUIntBE(0, 6))
        const listed = async (keys: LockKey[]) => (await lib.listHolders(pool.db, { keys })).map((row) => [row.key, row.lockId])
        await holding(
          [pair, twin, small].map((k) => lib.createLock(pool.db, k).acquire()),
          async () => {
            expect(await listed([pair])).toEqual([[pair, pair]])
            expect(await listed([twin])).toEqual([[twin, twin]])
            expect(await listed([[pair[1], pair[0]]])).toEqual([])
            expect(await listed([small])).toEqual([[small, BigInt(small)]])
            expect(await listed([BigInt(small)])).toEqual([[BigInt(small), BigInt(small)]])
          },
        )
      })

      it('reads ids back at the ends of their ranges', async () => {
        const pool = await open()
        const offset = randomBytes(2).readUInt16BE(0)
        const edges: LockKey[] = [
          -(2n ** 63n) + BigInt(offset),
          2n ** 63n - 1n - BigInt(offset),
          [-(2 ** 31) + offset, 2 ** 31 - 1 - offset],
        ]
        await holding(
          edges.map((k) => lib.createLock(pool.db, k).acquire()),
          async () => {
            const rows = await lib.listHolders(pool.db, { keys: edges })
            expect(rows.map((row) => row.lockId)).toEqual(expect.arrayContaining(edges))
            expect(rows).toHaveLength(3)
          },
        )
      })

      it('tells shared holders from an exclusive waiter', async () => {
        const pool = await open()
        const k = key('shared')
        // from a pool of its own: a pool queues its own same-key waiters in memory, not in Postgres
        const elsewhere = await open()
        // the readers on two pools: multiplexed shared holds of one pool stack in one session, one row
        const readers = await open()
        let writer: Promise<{ release(): Promise<boolean> }> | undefined
        try {
          await holding(
            [pool, readers].map((each) => lib.createLock(each.db, k, { mode: 'shared' }).acquire()),
            async () => {
              writer = lib.createLock(elsewhere.db, k).acquire()
              await observer.until('the writer waits', async () => (await observer.waiters(k)).length === 1)
              const rows = await lib.listHolders(pool.db, { keys: [k] })
              expect(rows.map(({ mode, granted }) => ({ mode, granted }))).toEqual([
                { mode: 'shared', granted: true },
                { mode: 'shared', granted: true },
                { mode: 'exclusive', granted: false },
              ])
              expect(rows.map((row) => row.pid).sort()).toEqual([...(await observer.holders(k)), ...(await observer.waiters(k))].sort())
            },
          )
        } finally {
          await (await writer)?.release()
        }
      })

      it('lists every advisory lock of the database, naming no key, when given no keys', async () => {
        const pool = await open()
        const k = key('all')
        const lock = lib.createLock(pool.db, k)
        await holding([lock.acquire()], async () => {
          const mine = await lockPid(lock)
          for (const options of [undefined, {}, { keyHash: 'postgres-lock-0.1' as const }]) {
            const rows = await lib.listHolders(pool.db, options)
            expect(rows).toContainEqual(expect.objectContaining({ lockId: idOf(k), key: undefined, pid: mine, granted: true }))
          }
        })
      })

      it('resolves an empty list of keys to no holders without any SQL', async () => {
        const pool = await open()
        await pool.close()
        expect(await lib.listHolders(pool.db, { keys: [] })).toEqual([])
      })

      const malformed: [string, unknown, string][] = [
        ['a string', 'keys', 'INVALID_ARGUMENT'],
        ['null', null, 'INVALID_ARGUMENT'],
        ['keys as a string', { keys: 'invoice:42' }, 'INVALID_ARGUMENT'],
        ['keys as a Set', { keys: new Set(['invoice:42']) }, 'INVALID_ARGUMENT'],
        ['an unknown option', { key: ['invoice:42'] }, 'INVALID_ARGUMENT'],
        ['an empty list of hashes', { keys: ['invoice:42'], keyHash: [] }, 'INVALID_ARGUMENT'],
        ['a key of 1.5', { keys: [1.5] }, 'INVALID_KEY'],
        ['a key of 2^64', { keys: [2n ** 64n] }, 'INVALID_KEY'],
        ['a pair out of int32', { keys: [[2 ** 31, 0]] }, 'INVALID_KEY'],
        ['a null key', { keys: ['invoice:42', null] }, 'INVALID_KEY'],
        ['an unknown keyHash', { keyHash: 'md5' }, 'INVALID_ARGUMENT'],
        ['an unknown keyHash in a list', { keys: ['invoice:42'], keyHash: ['sha1-int64', 'md5'] }, 'INVALID_ARGUMENT'],
      ]
      for (const [label, options, code] of malformed) {
        it(`refuses ${label} as options with ${code} before any SQL`, async () => {
          const pool = await open()
          await pool.close()
          await expect(lib.listHolders(pool.db, options as ListHoldersOptions)).rejects.toMatchObject({ code })
        })
      }

      it('refuses what is not a handle of its driver with INVALID_ARGUMENT', async () => {
        for (const db of [null, undefined, 42, {}, 'postgres://localhost/db']) {
          await expect(lib.listHolders(db)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
        }
      })

      it('costs one round trip', async () => {
        const proxy = await FaultProxy.start(url)
        onTestFinished(() => proxy.close())
        const pool = await open('pool', 1, proxy.url)
        const k = key('round-trip')
        // the pool's one connection is opened (and a driver's first-use statements run) first
        await lib.listHolders(pool.db, { keys: [k] })
        const before = proxy.roundTrips
        await lib.listHolders(pool.db, { keys: [k, key('round-trip-other')], keyHash: ['sha1-int64', 'postgres-lock-0.1'] })
        expect(proxy.roundTrips - before).toBe(1)
      })

      describe('on every handle the adapter takes', () => {
        /** Holds `k` on a pool of its own, so that whichever handle lists it sees another backend. */
        const heldElsewhere = async (k: string, body: (holder: number) => Promise<void>) => {
          const lock = lib.createLock((await open()).db, k)
          await holding([lock.acquire()], async () => body(await lockPid(lock)))
        }
        const seen = async (db: unknown, k: string) =>
          (await lib.listHolders(db, { keys: [k] })).map(({ key, pid, granted }) => ({ key, pid, granted }))

        it('a pool', async () => {
          const pool = await open()
          const k = key('on-pool')
          await heldElsewhere(k, async (holder) => expect(await seen(pool.db, k)).toEqual([{ key: k, pid: holder, granted: true }]))
        })

        it.skipIf(!caps.singleConnection)('a dedicated connection', async () => {
          const connection = await open('connection')
          const k = key('on-connection')
          await heldElsewhere(k, async (holder) => expect(await seen(connection.db, k)).toEqual([{ key: k, pid: holder, granted: true }]))
        })

        it.skipIf(!caps.transactionHandle)('a handle inside a transaction, seeing the transaction lock it holds', async () => {
          const pool = await open()
          const k = key('on-tx')
          const theirs = key('on-tx-theirs')
          await heldElsewhere(theirs, (holder) =>
            (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool.db, async (tx) => {
              await lib.createLock(tx, k, { scope: 'transaction' }).acquire()
              expect(await seen(tx, theirs)).toEqual([{ key: theirs, pid: holder, granted: true }])
              const [own] = await lib.listHolders(tx, { keys: [k] })
              expect(own).toMatchObject({ key: k, pid: await pid(tx), granted: true, state: 'active', transactionStart: expect.any(Date) })
            }),
          )
        })

        it.skipIf(!caps.savepointHandle)("a savepoint's handle", async () => {
          const pool = await open()
          const k = key('on-savepoint')
          await heldElsewhere(k, async (holder) => {
            const listed = await (adapter.inTransaction as NonNullable<typeof adapter.inTransaction>)(pool.db, (tx) =>
              (adapter.inSavepoint as NonNullable<typeof adapter.inSavepoint>)(tx, (savepoint) => seen(savepoint, k)),
            )
            expect(listed).toEqual([{ key: k, pid: holder, granted: true }])
          })
        })

        for (const scope of scopesOf(adapter.caps)) {
          it.skipIf((scope === 'session' && !caps.sessionOnPool) || caps.leaseDb === false)(
            `lease.db in ${scope} scope, seeing the lock it holds`,
            async () => {
              const pool = await open()
              const k = key(`on-lease-${scope}`)
              const [own, mine] = await lib.withLock(
                pool.db,
                k,
                async ({ db }) => [(await lib.listHolders(db, { keys: [k] }))[0], await pid(db)],
                {
                  scope,
                },
              )
              expect(own).toMatchObject({ key: k, pid: mine, granted: true, state: 'active', transactionStart: expect.any(Date) })
            },
          )
        }
      })

      it("shows a role without privileges every lock, but of other roles' backends only pid and application name", async () => {
        const role = `pglock_probe_${randomBytes(5).toString('hex')}`
        const password = randomBytes(12).toString('hex')
        await observer.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`)
        try {
          const pool = await open()
          const asRole = new URL(url)
          asRole.username = role
          asRole.password = password
          const applicationName = `pglock-r-${randomBytes(5).toString('hex')}`
          const unprivileged = await adapter.openPool({ url: asRole.href, applicationName, max: 2 })
          const theirs = lib.createLock(pool.db, key('unprivileged-theirs'))
          const mine = lib.createLock(unprivileged.db, key('unprivileged-mine'))
          try {
            await holding([theirs.acquire(), mine.acquire()], async () => {
              const rows = await lib.listHolders(unprivileged.db, { keys: [theirs.key, mine.key] })
              expect(rows).toHaveLength(2)
              expect(rows).toEqual(
                expect.arrayContaining([
                  {
                    lockId: idOf(theirs.key),
                    key: theirs.key,
                    mode: 'exclusive',
                    granted: true,
                    waitingSince: undefined,
                    pid: await lockPid(theirs),
                    applicationName: pool.applicationName,
                    clientAddress: undefined,
                    backendStart: undefined,
                    transactionStart: undefined,
                    state: undefined,
                  },
                  expect.objectContaining({
                    key: mine.key,
                    pid: await lockPid(mine),
                    applicationName,
                    backendStart: expect.any(Date),
                    state: 'idle',
                  }),
                ]),
              )
            })
          } finally {
            await unprivileged.close()
          }
        } finally {
          await observer.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [role])
          await observer.until('the role has no backend left', async () => {
            const [row] = await observer.query<{ n: string }>('SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1', [role])
            return Number(row?.n) === 0
          })
          await observer.query(`DROP ROLE ${role}`)
        }
      })
    })
  })
}
