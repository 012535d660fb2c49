import { interruptible } from './wait.js'

/** @internal A place in an in-memory gate; `leave()` lets the next waiter in. */
export interface GateTicket {
  leave(): void
  /**
   * Names a check that newcomers run when they find the gate taken: it makes the holder leave if
   * it no longer holds its lock. Transaction locks need it, as they end with their transaction
   * without a word to pglock.
   */
  recheckWith(check: Recheck): void
}

/**
 * Makes a holder leave if it no longer holds; runs its statement through `via`, the newcomer's
 * connection, when the newcomer reached the same connection through another handle (the holder's
 * own handle may be a transaction that is over).
 */
export type Recheck = (via: { query(sql: string): Promise<readonly Readonly<Record<string, unknown>>[]> } | undefined) => Promise<void>

interface GateWait {
  readonly noWait: boolean
  readonly signal?: AbortSignal | undefined
  readonly deadline?: number | undefined
  /** the newcomer's connection, for holders' rechecks (see {@link Recheck}) */
  readonly via?: Parameters<Recheck>[0]
}

interface Waiter {
  readonly exclusive: boolean
  readonly admit: (ticket: GateTicket) => void
}

/** The gate of one lock id within one queue key: who is in, and who waits. */
class Entry {
  exclusive = false
  shared = 0
  /** made on the first waiter: most entries never see one */
  queue: Waiter[] | undefined
  /** the rechecks of holders that may have ended unseen (see {@link GateTicket.recheckWith}) */
  checks: Set<Recheck> | undefined
  constructor(
    /** the gates of its queue key, which forget it once it is empty */
    readonly gates: Gates,
    public token: string,
  ) {}
}

/**
 * The gates of one queue key. Most keys (a pooled connection, most pools) have one lock in memory
 * at a time, so the first entry sits in `single` and a `Map` is made only from the second on.
 */
class Gates {
  single: Entry | undefined
  more: Map<string, Entry> | undefined
  /**
   * The last entry forgotten, reused for the next: it is empty (nobody in, nobody waiting), and a
   * ticket that still points at it has left.
   */
  spare: Entry | undefined
  /**
   * The key of gates made for a key that lives no longer than one lock (the handle of a connection
   * pglock owns): they leave {@link gates} once empty, where a dead key would stay until a full GC.
   */
  transientKey: object | undefined

  find(token: string): Entry | undefined {
    const { single } = this
    return single !== undefined && single.token === token ? single : this.more?.get(token)
  }

  entryFor(token: string): Entry {
    const found = this.find(token)
    if (found !== undefined) return found
    const { spare } = this
    let entry: Entry
    if (spare === undefined) entry = new Entry(this, token)
    else {
      this.spare = undefined
      entry = spare
      entry.token = token
      entry.checks = undefined
    }
    if (this.single === undefined) this.single = entry
    else (this.more ??= new Map()).set(token, entry)
    return entry
  }

  forget(entry: Entry): void {
    if (this.single === entry) this.single = undefined
    else if (this.more?.get(entry.token) === entry) this.more.delete(entry.token)
    else return
    this.spare = entry
    const key = this.transientKey
    if (key !== undefined && this.single === undefined && (this.more === undefined || this.more.size === 0)) gates.delete(key)
  }
}

const gates = new WeakMap<object, Gates>()

function gatesOf(scope: object, transient = false): Gates {
  let found = gates.get(scope)
  if (found === undefined) {
    found = new Gates()
    if (transient) found.transientKey = scope
    gates.set(scope, found)
  }
  return found
}

function entryFor(scope: object, token: string, transient?: boolean): Entry {
  return gatesOf(scope, transient).entryFor(token)
}

function compatible(entry: Entry, exclusive: boolean): boolean {
  return exclusive ? !entry.exclusive && entry.shared === 0 : !entry.exclusive
}

/** A place in a gate: one small object per lock, as every lock takes one or two. */
class Ticket implements GateTicket {
  #left = false
  #check: Recheck | undefined
  constructor(
    readonly entry: Entry,
    readonly exclusive: boolean,
  ) {
    if (exclusive) entry.exclusive = true
    else entry.shared += 1
  }

  leave(): void {
    if (this.#left) return
    this.#left = true
    const { entry } = this
    if (this.#check !== undefined) entry.checks?.delete(this.#check)
    if (this.exclusive) entry.exclusive = false
    else entry.shared -= 1
    admitWaiting(entry)
  }

  recheckWith(recheck: Recheck): void {
    if (this.#left) return
    this.#check = recheck
    this.entry.checks ??= new Set()
    this.entry.checks.add(recheck)
  }
}

/** Runs the rechecks of the gate's holders; a failed one counts as "still held". */
function recheckHolders(entry: Entry, via: Parameters<Recheck>[0]): Promise<unknown> {
  const checks = [...(entry.checks ?? [])]
  return Promise.all(checks.map((check) => check(via).catch(() => undefined)))
}

/** A place in the gate if it is free now and nobody queues for it; else `undefined`. */
function tryEnter(entry: Entry, exclusive: boolean): GateTicket | undefined {
  return (entry.queue === undefined || entry.queue.length === 0) && compatible(entry, exclusive) ? new Ticket(entry, exclusive) : undefined
}

function admitWaiting(entry: Entry): void {
  const { queue } = entry
  while (queue !== undefined && queue.length > 0) {
    const next = queue[0] as Waiter
    if (!compatible(entry, next.exclusive)) return
    queue.shift()
    next.admit(new Ticket(entry, next.exclusive))
  }
  if (!entry.exclusive && entry.shared === 0) entry.gates.forget(entry)
}

/**
 * @internal A place in the gate for `token` within `scope` if it is free now and nobody queues for
 * it, without a promise: the usual case. Else `undefined`, and {@link enterGate} waits.
 */
export function enterGateNow(scope: object, token: string, exclusive: boolean): GateTicket | undefined {
  return tryEnter(entryFor(scope, token), exclusive)
}

/**
 * @internal Enters the in-memory gate for `token` (a lock id) within `scope` (an executor's
 * `queueKey`: a pool or a connection). Exclusive entrants exclude everyone; shared ones exclude only exclusive ones.
 * Waiters are admitted first come, first served. With `noWait`, resolves `undefined` at once
 * instead of queueing when the gate is busy.
 */
export function enterGate(scope: object, token: string, exclusive: boolean, wait: GateWait): Promise<GateTicket | undefined> {
  const entry = entryFor(scope, token)
  const free = tryEnter(entry, exclusive)
  if (free !== undefined) return Promise.resolve(free)
  if (wait.noWait) {
    if (entry.checks === undefined || entry.checks.size === 0) return Promise.resolve(undefined)
    return interruptible(recheckHolders(entry, wait.via), { ...wait, abandon: () => undefined }).then(() => {
      const now = entryFor(scope, token)
      return tryEnter(now, exclusive)
    })
  }
  if (entry.checks !== undefined && entry.checks.size > 0) void recheckHolders(entry, wait.via)
  return queue(entry, exclusive, wait)
}

function queue(entry: Entry, exclusive: boolean, wait: GateWait): Promise<GateTicket> {
  let waiter: Waiter | undefined
  const admitted = new Promise<GateTicket>((admit) => {
    waiter = { exclusive, admit }
    entry.queue ??= []
    entry.queue.push(waiter)
  })
  return interruptible(admitted, {
    signal: wait.signal,
    deadline: wait.deadline,
    abandon: (ticket) => ticket.leave(),
  }).catch((reason: unknown) => {
    const index = entry.queue?.indexOf(waiter as Waiter) ?? -1
    if (index !== -1) {
      entry.queue?.splice(index, 1)
      admitWaiting(entry)
    }
    throw reason
  })
}

/** @internal The ticket of a lock that occupies no gate of its connection. */
export const NO_TICKET: GateTicket = { leave: () => undefined, recheckWith: () => undefined }

/**
 * @internal Enters the gate of the physical connection a lock is taken on (`connectionKey`),
 * when it names one other than `queueKey`, the executor's: handles that reach one connection
 * through different objects queue there. Always exclusive, since Postgres cannot tell them apart.
 * Resolves {@link NO_TICKET} when there is no such gate, `undefined` when `noWait` finds it busy.
 */
export function enterConnectionGate(
  connection: { readonly connectionKey: object | undefined; query(sql: string): Promise<readonly Readonly<Record<string, unknown>>[]> },
  queueKey: object,
  token: string,
  wait: GateWait,
): Promise<GateTicket | undefined> {
  const own = connection.connectionKey
  if (own === undefined || own === queueKey) return Promise.resolve(NO_TICKET)
  return enterGate(own, token, true, { ...wait, via: connection as Parameters<Recheck>[0] })
}

/**
 * @internal {@link enterConnectionGate} without a promise when the gate is free now (or there is
 * none): the usual case. `undefined` when it is taken, and {@link enterConnectionGate} waits.
 */
export function enterConnectionGateNow(
  connection: { readonly connectionKey: object | undefined },
  queueKey: object,
  token: string,
): GateTicket | undefined {
  const own = connection.connectionKey
  if (own === undefined || own === queueKey) return NO_TICKET
  return tryEnter(entryFor(own, token), true)
}

/**
 * @internal Claims the gate of a connection pglock owns, when its handle is first handed out
 * (`lease.db`, `lock.db`): no other handle can reach that connection before, so this never waits,
 * and a lock whose handle nobody reads never touches the gate. {@link NO_TICKET} when there is no
 * such gate (or, which cannot happen, it is taken).
 */
export function claimConnectionGate(
  connection: { readonly connectionKey: object | undefined },
  queueKey: object,
  token: string,
): GateTicket {
  const own = connection.connectionKey
  if (own === undefined || own === queueKey) return NO_TICKET
  return tryEnter(entryFor(own, token, true), true) ?? NO_TICKET
}
