import { type Lock, LockLostError, LockTimeoutError } from '@pglock/core'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { abortedWithin, Bench, type BenchHandle, scaled } from './bench.ts'

/** Property runs: a few under `pnpm test` (seconds), many under `pnpm test:soak`. */
export const MODEL_RUNS = scaled(10, 200)
const MAX_COMMANDS = scaled(30, 50)
const WAIT_MS = 30

type Via = 'A' | 'B' | 'C'
type Mode = 'exclusive' | 'shared'

/** One handle of the model: which pool (A, B) or the single connection (C), which key, which mode. */
interface Slot {
  readonly via: Via
  readonly key: 0 | 1
  readonly mode: Mode
}

const ALL_SLOTS: readonly Slot[] = [
  { via: 'A', key: 0, mode: 'exclusive' },
  { via: 'A', key: 0, mode: 'shared' },
  { via: 'B', key: 0, mode: 'shared' },
  { via: 'B', key: 0, mode: 'exclusive' },
  { via: 'C', key: 0, mode: 'exclusive' },
  { via: 'C', key: 0, mode: 'shared' },
  { via: 'C', key: 0, mode: 'shared' },
  { via: 'A', key: 1, mode: 'exclusive' },
  { via: 'C', key: 1, mode: 'exclusive' },
]

/** What the model believes: which handles hold their lock. */
interface Model {
  readonly slots: readonly Slot[]
  readonly held: boolean[]
}

/** The system under test: real handles on real pools, and the pid each holder's lock sits on. */
interface Real {
  readonly bench: Bench
  readonly adapter: AdapterUnderTest
  readonly keys: readonly [string, string]
  readonly pools: { readonly A: BenchHandle; readonly B: BenchHandle }
  connection: BenchHandle | undefined
  readonly handles: Lock<any>[]
  readonly pids: (number | undefined)[]
  /** the commands run so far, for the run's figures */
  readonly ran: string[]
}

/**
 * Whether handle `i` would have to wait. Two handles on one key conflict unless both are shared;
 * on the single connection they always conflict (Postgres would let the session re-enter, so
 * pglock queues them in memory).
 */
function blocked(model: Model, i: number): boolean {
  const me = model.slots[i] as Slot
  return model.slots.some((other, j) => {
    if (j === i || !model.held[j] || other.key !== me.key) return false
    return !(me.mode === 'shared' && other.mode === 'shared') || (me.via === 'C' && other.via === 'C')
  })
}

function label(model: Model, i: number): string {
  const slot = model.slots[i] as Slot
  return `h${i}(${slot.via},k${slot.key},${slot.mode})`
}

async function pidOf(real: Real, i: number): Promise<number> {
  const [row] = await real.adapter.query(real.handles[i]?.db, 'SELECT pg_backend_pid() AS pid')
  return Number(row?.pid)
}

function dbOf(real: Real, slot: Slot): unknown {
  if (slot.via === 'C') return real.connection?.db
  return real.pools[slot.via].db
}

function makeHandle(real: Real, slot: Slot): Lock<any> {
  return real.adapter.lib.createLock(dbOf(real, slot), real.keys[slot.key], { mode: slot.mode })
}

/** After every command: each handle's `isHeld` and Postgres's `pg_locks` agree with the model. */
async function compare(model: Model, real: Real, after: string): Promise<void> {
  model.held.forEach((held, i) => {
    expect(real.handles[i]?.isHeld, `${after}: ${label(model, i)}.isHeld`).toBe(held)
  })
  for (const k of [0, 1] as const) {
    const rows = await real.bench.observer.locks(real.keys[k])
    const seen = rows.map((row) => `${row.pid}:${row.mode}:${row.granted}`).sort()
    const expected = model.slots
      .map((slot, i) => ({ slot, i }))
      .filter(({ slot, i }) => slot.key === k && model.held[i])
      .map(({ slot, i }) => `${real.pids[i]}:${slot.mode === 'shared' ? 'ShareLock' : 'ExclusiveLock'}:true`)
      .sort()
    expect(seen, `${after}: pg_locks for key ${k}`).toEqual(expected)
  }
}

async function took(model: Model, real: Real, i: number, granted: boolean): Promise<void> {
  model.held[i] = granted
  real.pids[i] = granted ? await pidOf(real, i) : undefined
}

abstract class Step implements fc.AsyncCommand<Model, Real> {
  constructor(readonly i: number) {}
  abstract check(model: Readonly<Model>): boolean
  abstract act(model: Model, real: Real): Promise<void>
  abstract name(): string
  async run(model: Model, real: Real): Promise<void> {
    real.ran.push(this.toString())
    await this.act(model, real)
    await compare(model, real, this.toString())
  }
  toString(): string {
    return `${this.name()}(h${this.i})`
  }
}

class TryAcquire extends Step {
  name() {
    return 'tryAcquire'
  }
  check() {
    return true
  }
  async act(model: Model, real: Real) {
    const lock = real.handles[this.i] as Lock
    if (model.held[this.i]) return void (await expect(lock.tryAcquire()).rejects.toMatchObject({ code: 'ALREADY_HELD' }))
    const expected = !blocked(model, this.i)
    expect(await lock.tryAcquire(), `${this} when ${expected ? 'free' : 'taken'}`).toBe(expected)
    await took(model, real, this.i, expected)
  }
}

class Acquire extends Step {
  name() {
    return 'acquire'
  }
  check(model: Readonly<Model>) {
    return !model.held[this.i] && !blocked(model, this.i)
  }
  async act(model: Model, real: Real) {
    await (real.handles[this.i] as Lock).acquire()
    await took(model, real, this.i, true)
  }
}

class AcquireWithTimeout extends Step {
  name() {
    return 'acquire-timeout'
  }
  check(model: Readonly<Model>) {
    return !model.held[this.i]
  }
  async act(model: Model, real: Real) {
    const lock = real.handles[this.i] as Lock
    if (blocked(model, this.i)) await expect(lock.acquire({ timeoutMs: WAIT_MS })).rejects.toBeInstanceOf(LockTimeoutError)
    else await lock.acquire({ timeoutMs: WAIT_MS })
    await took(model, real, this.i, !blocked(model, this.i))
  }
}

class AcquireThenAbort extends Step {
  name() {
    return 'acquire-abort'
  }
  check(model: Readonly<Model>) {
    return !model.held[this.i] && blocked(model, this.i)
  }
  async act(_model: Model, real: Real) {
    const reason = new Error('model abort')
    const controller = new AbortController()
    const waiting = (real.handles[this.i] as Lock).acquire({ signal: controller.signal })
    setTimeout(() => controller.abort(reason), WAIT_MS)
    await expect(waiting).rejects.toBe(reason)
  }
}

class AcquireAborted extends Step {
  name() {
    return 'acquire-pre-aborted'
  }
  check() {
    return true
  }
  async act(model: Model, real: Real) {
    const reason = new Error('already aborted')
    const attempt = (real.handles[this.i] as Lock).acquire({ signal: AbortSignal.abort(reason) })
    if (model.held[this.i]) await expect(attempt).rejects.toMatchObject({ code: 'ALREADY_HELD' })
    else await expect(attempt).rejects.toBe(reason)
  }
}

class Release extends Step {
  name() {
    return 'release'
  }
  check() {
    return true
  }
  async act(model: Model, real: Real) {
    expect(await (real.handles[this.i] as Lock).release(), `${this}`).toBe(model.held[this.i])
    await took(model, real, this.i, false)
  }
}

class Kill extends Step {
  name() {
    return 'kill'
  }
  check(model: Readonly<Model>) {
    return model.held[this.i] === true
  }
  async act(model: Model, real: Real) {
    const slot = model.slots[this.i] as Slot
    const pid = real.pids[this.i] as number
    const victims = model.slots.map((_, j) => j).filter((j) => model.held[j] && real.pids[j] === pid)
    const signals = victims.map((j) => (real.handles[j] as Lock).signal)
    await real.bench.observer.terminate(pid)
    for (const signal of signals) expect((await abortedWithin(signal, 2_000)).reason).toBeInstanceOf(LockLostError)
    await real.bench.observer.until(`backend ${pid} is gone`, async () => {
      for (const key of real.keys) if ((await real.bench.observer.holders(key)).includes(pid)) return false
      return true
    })
    for (const j of victims) await took(model, real, j, false)
    if (slot.via === 'C') {
      const dead = real.connection
      real.connection = await real.bench.open({ kind: 'connection' })
      model.slots.forEach((other, j) => {
        if (other.via === 'C') real.handles[j] = makeHandle(real, other)
      })
      await dead?.close().catch(() => undefined)
    }
  }
}

/**
 * Model-based property test of the lock state machine: fast-check generates sequences of
 * `tryAcquire`, `acquire`, `acquire` with a timeout, `acquire` aborted mid-wait or already
 * aborted, `release`, and killing a holder's backend (`pg_terminate_backend`), across nine
 * handles on two keys, spread over two pools and one single connection, in both modes. After
 * every command each handle's `isHeld` and the observer's `pg_locks` rows must match a simple
 * model: a handle holds iff the model says so, on the backend it was granted on, in its mode.
 *
 * @example
 * ```ts
 * import { describeModel } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeModel(adapter)
 * ```
 */
export function describeModel(adapter: AdapterUnderTest): void {
  const { caps } = adapter
  const slots = ALL_SLOTS.filter((slot) => slot.via !== 'C' || caps.singleConnection)
  const indexes = fc.integer({ min: 0, max: slots.length - 1 })
  const steps = [
    indexes.map((i) => new TryAcquire(i)),
    indexes.map((i) => new TryAcquire(i)),
    indexes.map((i) => new Acquire(i)),
    indexes.map((i) => new Acquire(i)),
    indexes.map((i) => new AcquireWithTimeout(i)),
    indexes.map((i) => new AcquireThenAbort(i)),
    indexes.map((i) => new AcquireAborted(i)),
    indexes.map((i) => new Release(i)),
    indexes.map((i) => new Release(i)),
    ...(caps.survivesConnectionLoss ? [indexes.map((i) => new Kill(i))] : []),
  ]

  describe(`${adapter.name}: lock state machine against a model`, () => {
    const bench = new Bench(adapter, 'model').install()

    it.skipIf(!caps.sessionOnPool)(
      `matches the model over ${MODEL_RUNS} random command sequences`,
      async () => {
        const pools = { A: await bench.open({ max: 4 }), B: await bench.open({ max: 3 }) }
        const seed = process.env.PGLOCK_FC_SEED === undefined ? undefined : Number(process.env.PGLOCK_FC_SEED)
        let commands = 0
        await fc.assert(
          fc.asyncProperty(fc.commands(steps, { maxCommands: MAX_COMMANDS, size: 'max' }), async (sequence) => {
            const real: Real = {
              bench,
              adapter,
              keys: [bench.key('model-0'), bench.key('model-1')],
              pools,
              connection: caps.singleConnection ? await bench.open({ kind: 'connection' }) : undefined,
              handles: [],
              pids: [],
              ran: [],
            }
            for (const slot of slots) real.handles.push(makeHandle(real, slot))
            const model: Model = { slots, held: slots.map(() => false) }
            try {
              await fc.asyncModelRun(() => ({ model, real }), sequence)
            } finally {
              commands += real.ran.length
              for (const handle of real.handles) await handle.release().catch(() => undefined)
              await real.connection?.close()
              for (const key of real.keys) {
                await bench.observer.until(`key ${key} is free between runs`, async () => (await bench.observer.locks(key)).length === 0)
              }
            }
          }),
          { numRuns: MODEL_RUNS, ...(seed === undefined ? {} : { seed }) },
        )
        console.log(`model ${adapter.name}: ${MODEL_RUNS} runs, ${commands} commands checked against pg_locks`)
        await bench.expectAllConnectionsUsable(pools.A)
        await bench.expectAllConnectionsUsable(pools.B)
      },
      1_800_000,
    )
  })
}
