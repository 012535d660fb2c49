import type { Lock, LockKey } from '@pglock/core'
import fc from 'fast-check'
import { expect } from 'vitest'
import type { LockFunctions } from './adapter.ts'
import { abortedWithin } from './within.ts'

/**
 * The model of the lock state machine and its random commands, run against any {@link ModelWorld}:
 * a real database (`describeModel`) or the in-memory Postgres model (the core's unit tests). Only
 * types come from `@pglock/core`, and errors are matched by `code`, so either copy of the core
 * (its source or its `dist`) can be under test.
 */

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

/**
 * One advisory lock row of `pg_locks`, as the model compares it.
 *
 * @example
 * ```ts
 * const row: ModelLockRow = { pid: 4242, mode: 'ExclusiveLock', granted: true }
 * ```
 */
export interface ModelLockRow {
  readonly pid: number
  readonly mode: string
  readonly granted: boolean
}

/**
 * Where the model's commands run: two pools (`A`, `B`), maybe one dedicated connection (`C`), and
 * a view of what the server decided.
 *
 * @example
 * ```ts
 * const world: ModelWorld = {
 *   lib, keys: ['k0', 'k1'], waitMs: 30,
 *   db: (via) => handles[via],
 *   pidOf: async (db) => (await query(db, 'SELECT pg_backend_pid() AS pid'))[0].pid,
 *   locks: (key) => observer.locks(key),
 *   terminate: (pid) => observer.terminate(pid),
 *   reopenConnection: async () => { handles.C = await openConnection() },
 *   pause: () => sleep(30),
 * }
 * ```
 */
export interface ModelWorld {
  readonly lib: LockFunctions
  readonly keys: readonly [LockKey, LockKey]
  /** the `timeoutMs` of a timed acquire that the model expects to time out */
  readonly waitMs: number
  /** the driver handle of a pool or of the single connection */
  db(via: Via): unknown
  /** the backend a `lease.db` runs on */
  pidOf(db: unknown): Promise<number>
  /** the `pg_locks` rows of `key` */
  locks(key: LockKey): Promise<readonly ModelLockRow[]>
  /** terminates backend `pid`; resolves once it holds nothing */
  terminate(pid: number): Promise<void>
  /** replaces the single connection after its backend was terminated */
  reopenConnection(): Promise<void>
  /** long enough for a lock statement to be waiting in the server */
  pause(): Promise<void>
}

/** What the model believes: which handles hold their lock. */
interface Model {
  readonly slots: readonly Slot[]
  readonly held: boolean[]
}

/** The system under test: real handles in a world, and the pid each holder's lock sits on. */
interface Real {
  readonly world: ModelWorld
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

function makeHandle(world: ModelWorld, slot: Slot): Lock<any> {
  return world.lib.createLock(world.db(slot.via), world.keys[slot.key], { mode: slot.mode })
}

/**
 * After every command: each handle's `isHeld` and the server's `pg_locks` agree with the model.
 * One assertion for all of it, labelled by handle and key: thousands of runs make many.
 */
async function compare(model: Model, real: Real, after: string): Promise<void> {
  const seen: Record<string, unknown> = {}
  const expected: Record<string, unknown> = {}
  model.held.forEach((held, i) => {
    seen[`${label(model, i)}.isHeld`] = real.handles[i]?.isHeld
    expected[`${label(model, i)}.isHeld`] = held
  })
  for (const k of [0, 1] as const) {
    const rows = await real.world.locks(real.world.keys[k])
    seen[`pg_locks k${k}`] = rows.map((row) => `${row.pid}:${row.mode}:${row.granted}`).sort()
    expected[`pg_locks k${k}`] = model.slots
      .map((slot, i) => ({ slot, i }))
      .filter(({ slot, i }) => slot.key === k && model.held[i])
      .map(({ slot, i }) => `${real.pids[i]}:${slot.mode === 'shared' ? 'ShareLock' : 'ExclusiveLock'}:true`)
      .sort()
  }
  expect(seen, `after ${after}`).toEqual(expected)
}

async function took(model: Model, real: Real, i: number, granted: boolean): Promise<void> {
  model.held[i] = granted
  real.pids[i] = granted ? await real.world.pidOf(real.handles[i]?.db) : undefined
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
    const timeoutMs = real.world.waitMs
    if (blocked(model, this.i)) await expect(lock.acquire({ timeoutMs })).rejects.toMatchObject({ code: 'TIMEOUT' })
    else await lock.acquire({ timeoutMs })
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
    void real.world.pause().then(() => controller.abort(reason))
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
    await real.world.terminate(pid)
    for (const signal of signals) expect((await abortedWithin(signal, 2_000)).reason).toMatchObject({ code: 'LOST' })
    for (const j of victims) await took(model, real, j, false)
    if (slot.via === 'C') {
      await real.world.reopenConnection()
      model.slots.forEach((other, j) => {
        if (other.via === 'C') real.handles[j] = makeHandle(real.world, other)
      })
    }
  }
}

/** A random sequence of model commands, as `fc.commands` makes it. */
type ModelSequence = Iterable<fc.AsyncCommand<Model, Real>>

/**
 * What {@link assertModel} generates and how often.
 *
 * @example
 * ```ts
 * const options: ModelOptions = { singleConnection: true, kill: true, maxCommands: 30, numRuns: 1_000 }
 * ```
 */
export interface ModelOptions {
  /** include the single connection's handles (`C`) */
  readonly singleConnection: boolean
  /** include terminating a holder's backend */
  readonly kill: boolean
  readonly maxCommands: number
  readonly numRuns: number
}

/**
 * Checks the lock state machine against the model over `numRuns` random command sequences
 * (`tryAcquire`, `acquire`, `acquire` with a timeout, `acquire` aborted mid-wait or already
 * aborted, `release`, and with `kill` terminating a holder's backend) across nine handles on two
 * keys, over two pools and one single connection, in both modes. For each sequence `property`
 * opens a world, passes it to `check`, and cleans up; `check` runs the sequence, comparing after
 * every command each handle's `isHeld` and the world's `pg_locks` rows with the model (a handle
 * holds iff the model says so, on the backend it was granted on, in its mode), then releases every
 * handle. `PGLOCK_FC_SEED` replays a seed. Resolves to the number of commands run.
 *
 * @example
 * ```ts
 * await assertModel({ singleConnection: true, kill: true, maxCommands: 30, numRuns: 100 }, async (check) => {
 *   const world = await openWorld()
 *   try {
 *     await check(world)
 *   } finally {
 *     await world.close()
 *   }
 * })
 * ```
 */
export async function assertModel(
  options: ModelOptions,
  property: (check: (world: ModelWorld) => Promise<void>) => Promise<void>,
): Promise<number> {
  const slots = ALL_SLOTS.filter((slot) => slot.via !== 'C' || options.singleConnection)
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
    ...(options.kill ? [indexes.map((i) => new Kill(i))] : []),
  ]
  const seed = process.env.PGLOCK_FC_SEED === undefined ? undefined : Number(process.env.PGLOCK_FC_SEED)
  let commands = 0
  await fc.assert(
    fc.asyncProperty(fc.commands(steps, { maxCommands: options.maxCommands, size: 'max' }), (sequence) =>
      property(async (world) => {
        commands += await runModelSequence(world, slots, sequence)
      }),
    ),
    { numRuns: options.numRuns, ...(seed === undefined ? {} : { seed }) },
  )
  return commands
}

async function runModelSequence(world: ModelWorld, slots: readonly Slot[], sequence: ModelSequence): Promise<number> {
  const real: Real = { world, handles: slots.map((slot) => makeHandle(world, slot)), pids: [], ran: [] }
  const model: Model = { slots, held: slots.map(() => false) }
  try {
    await fc.asyncModelRun(() => ({ model, real }), sequence)
  } finally {
    for (const handle of real.handles) await handle.release().catch(() => undefined)
  }
  return real.ran.length
}
