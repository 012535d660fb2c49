import { AsyncLocalStorage } from 'node:async_hooks'
import { channel, tracingChannel } from 'node:diagnostics_channel'
import { afterEach, describe, expect, it } from 'vitest'
import { LockLostError, LockTimeoutError, resolveLockId, UnsupportedError } from '../src/index.js'
import { createLock, holders, MemoryPostgres, settle, tryWithLock, withLock } from './memory.ts'

type Event = { readonly name: string; readonly context: Record<string, unknown> }

const EVENTS = ['start', 'end', 'asyncStart', 'asyncEnd', 'error'] as const
const TRACED = ['acquire', 'run', 'release'] as const

/** Subscribes to every pglock channel, recording each event with a copy of its context as it was then. */
function record(): Event[] {
  const events: Event[] = []
  const handlers: (() => void)[] = []
  for (const traced of TRACED) {
    const channels = tracingChannel(`pglock:${traced}`)
    const subscribers = Object.fromEntries(
      EVENTS.map((event) => [event, (context: object) => events.push({ name: `${traced}:${event}`, context: { ...context } })]),
    ) as unknown as Parameters<typeof channels.subscribe>[0]
    channels.subscribe(subscribers)
    handlers.push(() => channels.unsubscribe(subscribers))
  }
  const lost = (message: unknown) => events.push({ name: 'lost', context: { ...(message as object) } })
  channel('pglock:lost').subscribe(lost)
  handlers.push(() => channel('pglock:lost').unsubscribe(lost))
  unsubscribers.push(...handlers)
  return events
}

const unsubscribers: (() => void)[] = []
afterEach(() => {
  for (const unsubscribe of unsubscribers.splice(0)) unsubscribe()
})

const names = (events: Event[]) => events.map((event) => event.name)
const one = (events: Event[], name: string) => {
  const found = events.filter((event) => event.name === name)
  expect(found).toHaveLength(1)
  return (found[0] as Event).context
}

describe('tracing channels', () => {
  it('traces a session withLock: acquire, run and release, in order, with the lock, adapter and pid', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const events = record()
    let holder: string[] = []
    const value = await withLock(pool, 'trace:1', () => {
      holder = holders(server, 'trace:1')
      return 'done'
    })
    expect(value).toBe('done')
    expect(names(events)).toEqual([
      'acquire:start',
      'acquire:end',
      'acquire:asyncStart',
      'acquire:asyncEnd',
      'run:start',
      'run:end',
      'run:asyncStart',
      'run:asyncEnd',
      'release:start',
      'release:end',
      'release:asyncStart',
      'release:asyncEnd',
    ])
    const pid = Number(holder[0]?.split(':')[0])
    const base = { key: 'trace:1', lockId: resolveLockId('trace:1').value, mode: 'exclusive', scope: 'session', adapter: 'memory' }
    expect(one(events, 'acquire:start')).toEqual({
      ...base,
      pid: undefined,
      operation: 'withLock',
      timeoutMs: undefined,
      outcome: undefined,
      waitedMs: undefined,
    })
    const acquired = one(events, 'acquire:asyncEnd')
    expect(acquired).toMatchObject({ ...base, pid, outcome: 'acquired', result: true })
    expect(acquired.waitedMs).toBeGreaterThanOrEqual(0)
    expect(one(events, 'run:asyncEnd')).toMatchObject({ ...base, pid, result: 'done' })
    expect(one(events, 'release:start')).toMatchObject({ ...base, pid, heldMs: undefined, released: undefined })
    const released = one(events, 'release:asyncEnd')
    expect(released).toMatchObject({ ...base, pid, released: true, result: true })
    expect(released.heldMs).toBeGreaterThanOrEqual(0)
  })

  it('reports each acquire outcome: busy, timeout, aborted and error, with what the call rejects with', async () => {
    const server = new MemoryPostgres()
    const pool = server.pool()
    const blocker = await createLock(pool, 'trace:2').acquire()
    const events = record()

    expect(await tryWithLock(pool, 'trace:2', () => 'never')).toEqual({ acquired: false })
    const timeout = await withLock(pool, 'trace:2', () => 'never', { timeoutMs: 20 }).catch((error: unknown) => error)
    expect(timeout).toBeInstanceOf(LockTimeoutError)
    const controller = new AbortController()
    const aborting = createLock(pool, 'trace:2').acquire({ signal: controller.signal })
    await settle()
    controller.abort(new Error('enough'))
    const aborted = await aborting.catch((error: unknown) => error)
    const client = server.connect()
    const unsupported = await createLock(client, 'trace:2', { scope: 'transaction' })
      .acquire()
      .catch((error: unknown) => error)
    expect(unsupported).toBeInstanceOf(UnsupportedError)

    const ends = events.filter((event) => event.name === 'acquire:asyncEnd').map((event) => event.context)
    expect(ends.map(({ operation, outcome }) => [operation, outcome])).toEqual([
      ['tryWithLock', 'busy'],
      ['withLock', 'timeout'],
      ['acquire', 'aborted'],
      ['acquire', 'error'],
    ])
    expect(ends[0]).toMatchObject({ result: false, pid: undefined })
    expect(ends[1]).toMatchObject({ error: timeout, timeoutMs: 20 })
    expect(ends[1]?.waitedMs).toBeGreaterThanOrEqual(15)
    expect(ends[2]).toMatchObject({ error: aborted })
    expect(ends[3]).toMatchObject({ error: unsupported })
    expect(events.filter((event) => event.name === 'acquire:error')).toHaveLength(3)
    expect(names(events).filter((name) => !name.startsWith('acquire:'))).toEqual([])
    await blocker.release()
  })

  it('traces lock.acquire() and lock.release(), heldMs from the grant', async () => {
    const server = new MemoryPostgres()
    const events = record()
    const lock = await createLock(server.pool(), [3, 4], { mode: 'shared' }).acquire()
    const pid = lock.db.pid
    await new Promise((resolve) => setTimeout(resolve, 30))
    expect(await lock.release()).toBe(true)
    expect(one(events, 'acquire:asyncEnd')).toMatchObject({
      operation: 'acquire',
      lockId: [3, 4],
      mode: 'shared',
      pid,
      outcome: 'acquired',
    })
    const released = one(events, 'release:asyncEnd')
    expect(released).toMatchObject({ key: [3, 4], lockId: [3, 4], pid, released: true })
    expect(released.heldMs).toBeGreaterThanOrEqual(25)
    expect(await lock.release()).toBe(false)
    expect(names(events).filter((name) => name.startsWith('release:'))).toHaveLength(4)
  })

  it('publishes pglock:lost once for a lost lock, and no release for it', async () => {
    const server = new MemoryPostgres()
    const events = record()
    const lock = await createLock(server.pool(), 'trace:5').acquire()
    server.terminate(lock.db.pid)
    await settle()
    expect(lock.isHeld).toBe(false)
    expect(await lock.release()).toBe(false)
    const lost = one(events, 'lost')
    expect(lost).toMatchObject({ key: 'trace:5', pid: lock.db?.pid ?? lost.pid, adapter: 'memory', scope: 'session' })
    expect(lost.error).toBeInstanceOf(LockLostError)
    expect(lost.heldMs).toBeGreaterThanOrEqual(0)
    expect(names(events).filter((name) => name.startsWith('release:'))).toEqual([])
  })

  it('publishes the loss of a withLock lock while fn runs, and no release', async () => {
    const server = new MemoryPostgres()
    const events = record()
    const failure = await withLock(server.pool(), 'trace:6', async ({ db, signal }) => {
      server.terminate(db.pid)
      await settle()
      expect(signal.aborted).toBe(true)
    }).catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(LockLostError)
    expect(one(events, 'lost')).toMatchObject({ key: 'trace:6', error: failure })
    expect(one(events, 'run:asyncEnd')).toMatchObject({ result: undefined })
    expect(names(events).filter((name) => name.startsWith('release:'))).toEqual([])
  })

  for (const driverTransactions of [false, true]) {
    it(`traces the end of the transaction of a transaction-scoped withLock (${driverTransactions ? 'the driver' : 'pglock'} opens it)`, async () => {
      const server = new MemoryPostgres()
      const pool = server.pool({ driverTransactions })
      const events = record()
      await withLock(pool, 'trace:7', () => 'ok', { scope: 'transaction' })
      const fails = await withLock(
        pool,
        'trace:7',
        () => {
          throw new Error('fn failed')
        },
        { scope: 'transaction' },
      ).catch((error: unknown) => error)
      expect(fails).toMatchObject({ message: 'fn failed' })
      const releases = events.filter((event) => event.name === 'release:asyncEnd').map((event) => event.context)
      expect(releases).toHaveLength(2)
      for (const release of releases) expect(release).toMatchObject({ scope: 'transaction', pid: expect.any(Number), released: true })
      expect(names(events).filter((name) => name === 'release:error')).toEqual([])
      expect(one(events, 'run:error').error).toBe(fails)
      expect(server.locks()).toEqual([])
    })
  }

  it('releases under a savepoint of your transaction leave the lock to it: released false', async () => {
    const server = new MemoryPostgres()
    const client = server.connect()
    await client.query('BEGIN')
    const events = record()
    await withLock(client, 'trace:8', () => 'ok', { scope: 'transaction' })
    expect(one(events, 'release:asyncEnd')).toMatchObject({ released: false, result: false })
    expect(holders(server, 'trace:8')).toHaveLength(1)
    await client.query('COMMIT')
    expect(holders(server, 'trace:8')).toEqual([])
  })

  it("publishes acquire's start in the caller's async context, and run's start store is active inside fn", async () => {
    const server = new MemoryPostgres()
    const caller = new AsyncLocalStorage<string>()
    const seen: (string | undefined)[] = []
    const { start } = tracingChannel('pglock:acquire')
    const onStart = () => void seen.push(caller.getStore())
    start.subscribe(onStart)
    unsubscribers.push(() => void start.unsubscribe(onStart))
    const inFn = new AsyncLocalStorage<unknown>()
    const run = tracingChannel('pglock:run')
    run.start.bindStore(inFn, (context) => (context as { key: unknown }).key)
    unsubscribers.push(() => run.start.unbindStore(inFn))
    const pool = server.pool()
    const keys = await caller.run('the caller', () =>
      withLock(pool, 'trace:9', async () => {
        await settle()
        return inFn.getStore()
      }),
    )
    await caller.run('another caller', () => createLock(pool, 'trace:9').tryAcquire())
    expect(seen).toEqual(['the caller', 'another caller'])
    expect(keys).toBe('trace:9')
    expect(inFn.getStore()).toBeUndefined()
  })

  it('traces nothing for bad input, refused before any trace', async () => {
    const events = record()
    await expect(withLock(new MemoryPostgres().pool(), 1.5, () => 'never')).rejects.toMatchObject({ code: 'INVALID_KEY' })
    expect(events).toEqual([])
  })
})
