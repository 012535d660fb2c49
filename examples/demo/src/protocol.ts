/** The two phases the demo runs: the same increments without a lock, then under `withLock`. */
export type Phase = 'unlocked' | 'locked'

/** The advisory lock the locked phase takes around each read-modify-write. */
export const LOCK_KEY = 'pglock-demo:counter'

/** Environment variables through which the parent hands a worker its database and table. */
export const ENV_DATABASE_URL = 'PGLOCK_DEMO_DATABASE_URL'
export const ENV_TABLE = 'PGLOCK_DEMO_TABLE'

/** Parent to worker: every worker has connected, start now. */
export interface GoMessage {
  readonly type: 'go'
}

/** Worker to parent: `ready` once connected; `progress` with how many increments it has done. */
export type WorkerMessage = { readonly type: 'ready' } | { readonly type: 'progress'; readonly done: number }

export function isPhase(value: unknown): value is Phase {
  return value === 'unlocked' || value === 'locked'
}

export function isGoMessage(message: unknown): message is GoMessage {
  return typeof message === 'object' && message !== null && (message as GoMessage).type === 'go'
}

export function isWorkerMessage(message: unknown): message is WorkerMessage {
  if (typeof message !== 'object' || message === null) return false
  const { type, done } = message as { type?: unknown; done?: unknown }
  return type === 'ready' || (type === 'progress' && typeof done === 'number')
}
