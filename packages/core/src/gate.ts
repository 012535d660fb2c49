import { interruptible } from './wait.js'

/** @internal A place in an in-memory gate; `leave()` lets the next waiter in. */
export interface GateTicket {
  leave(): void
}

interface Waiter {
  readonly exclusive: boolean
  readonly admit: (ticket: GateTicket) => void
}

interface Entry {
  exclusive: boolean
  shared: number
  readonly queue: Waiter[]
}

const gates = new WeakMap<object, Map<string, Entry>>()

function entryFor(scope: object, token: string): Entry {
  let byToken = gates.get(scope)
  if (byToken === undefined) {
    byToken = new Map()
    gates.set(scope, byToken)
  }
  let entry = byToken.get(token)
  if (entry === undefined) {
    entry = { exclusive: false, shared: 0, queue: [] }
    byToken.set(token, entry)
  }
  return entry
}

function compatible(entry: Entry, exclusive: boolean): boolean {
  return exclusive ? !entry.exclusive && entry.shared === 0 : !entry.exclusive
}

function ticketFor(scope: object, token: string, entry: Entry, exclusive: boolean): GateTicket {
  if (exclusive) entry.exclusive = true
  else entry.shared += 1
  let left = false
  return {
    leave() {
      if (left) return
      left = true
      if (exclusive) entry.exclusive = false
      else entry.shared -= 1
      admitWaiting(scope, token, entry)
    },
  }
}

/** A place in the gate if it is free now and nobody queues for it; else `undefined`. */
function tryEnter(scope: object, token: string, entry: Entry, exclusive: boolean): GateTicket | undefined {
  return entry.queue.length === 0 && compatible(entry, exclusive) ? ticketFor(scope, token, entry, exclusive) : undefined
}

function admitWaiting(scope: object, token: string, entry: Entry): void {
  while (entry.queue.length > 0) {
    const next = entry.queue[0] as Waiter
    if (!compatible(entry, next.exclusive)) return
    entry.queue.shift()
    next.admit(ticketFor(scope, token, entry, next.exclusive))
  }
  if (!entry.exclusive && entry.shared === 0) gates.get(scope)?.delete(token)
}

/**
 * @internal Enters the in-memory gate for `token` (a lock id) within `scope` (a pool or a
 * connection). Exclusive entrants exclude everyone; shared ones exclude only exclusive ones.
 * Waiters are admitted first come, first served. With `attempt`, resolves `undefined` at once
 * instead of queueing when the gate is busy.
 */
export function enterGate(
  scope: object,
  token: string,
  exclusive: boolean,
  wait: { readonly attempt: boolean; readonly signal?: AbortSignal | undefined; readonly deadline?: number | undefined },
): Promise<GateTicket | undefined> {
  const entry = entryFor(scope, token)
  const free = tryEnter(scope, token, entry, exclusive)
  if (free !== undefined || wait.attempt) return Promise.resolve(free)
  let waiter: Waiter | undefined
  const admitted = new Promise<GateTicket>((admit) => {
    waiter = { exclusive, admit }
    entry.queue.push(waiter)
  })
  return interruptible(admitted, {
    signal: wait.signal,
    deadline: wait.deadline,
    abandon: (ticket) => ticket.leave(),
  }).catch((reason: unknown) => {
    const index = entry.queue.indexOf(waiter as Waiter)
    if (index !== -1) {
      entry.queue.splice(index, 1)
      admitWaiting(scope, token, entry)
    }
    throw reason
  })
}

/** @internal The ticket of a lock that occupies no gate of its connection. */
export const NO_TICKET: GateTicket = { leave: () => undefined }

/**
 * @internal Enters the gate of the physical connection a lock is taken on (`connection.scope`),
 * when it names one other than `scope`, the executor's: handles that reach one connection through
 * different objects queue there. Always exclusive, since Postgres cannot tell them apart. Resolves
 * {@link NO_TICKET} when there is no such gate, `undefined` when `attempt` finds it busy.
 */
export function enterConnectionGate(
  connection: { readonly scope?: object | undefined },
  scope: object,
  token: string,
  wait: { readonly attempt: boolean; readonly signal?: AbortSignal | undefined; readonly deadline?: number | undefined },
): Promise<GateTicket | undefined> {
  const own = connection.scope
  if (own === undefined || own === scope) return Promise.resolve(NO_TICKET)
  return enterGate(own, token, true, wait)
}

/**
 * @internal Claims the gate of a connection pglock owns, once its lock is granted: no other handle
 * can reach that connection before `lease.db` is handed out, so this never waits, and it runs
 * without a promise on every pooled lock. {@link NO_TICKET} when there is no such gate (or, which
 * cannot happen, it is taken).
 */
export function claimConnectionGate(connection: { readonly scope?: object | undefined }, scope: object, token: string): GateTicket {
  const own = connection.scope
  if (own === undefined || own === scope) return NO_TICKET
  return tryEnter(own, token, entryFor(own, token), true) ?? NO_TICKET
}
