import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { pgLocksRow, resolveLockId } from '@pglock/pg'
import pg from 'pg'
import { afterAll, afterEach, beforeAll, inject } from 'vitest'

/** The built bin, as npm links it: tests drive `pglock` as a real process. */
export const BIN = fileURLToPath(new URL('../dist/cli.js', import.meta.url))

/** How a `pglock` process ended, and what it printed. */
export interface Finished {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  /** From spawn to exit. */
  readonly ms: number
}

/** A running `pglock` and the promise of how it ends. */
export interface Running {
  readonly process: ChildProcess
  readonly done: Promise<Finished>
}

const running = new Set<ChildProcess>()

afterEach(() => {
  for (const child of running) {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
  running.clear()
})

/**
 * Starts `pglock args...` with the test database as `DATABASE_URL` (unless `env` says otherwise;
 * `undefined` in `env` removes a variable).
 */
export function start(args: readonly string[], env: Readonly<Record<string, string | undefined>> = {}): Running {
  const merged: Record<string, string | undefined> = { ...process.env, DATABASE_URL: inject('databaseUrl'), ...env }
  for (const name of Object.keys(merged)) if (merged[name] === undefined) delete merged[name]
  const started = performance.now()
  // a process group of its own, so that a failed test can end pglock and its command together
  const child = spawn(process.execPath, [BIN, ...args], { env: merged, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  running.add(child)
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const done = new Promise<Finished>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code, signal) => {
      running.delete(child)
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started })
    })
  })
  return { process: child, done }
}

/** Runs `pglock args...` to its end. */
export function pglock(args: readonly string[], env?: Readonly<Record<string, string | undefined>>): Promise<Finished> {
  return start(args, env).done
}

/** A key no other test (or agent sharing the database) uses. */
export function uniqueKey(label: string): string {
  return `pglock-test:cli:${label}:${randomBytes(6).toString('hex')}`
}

/** A fresh scratch directory per test, removed after it. */
export function scratch(): () => string {
  let dir: string | undefined
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true })
    dir = undefined
  })
  return () => (dir ??= mkdtempSync(join(tmpdir(), 'pglock-cli-')))
}

export const readLines = (file: string): string[] => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [])

/** Resolves once `check` holds, polling; rejects after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** One row of `pg_locks` for a string key's advisory lock in the test database. */
export interface AdvisoryRow {
  readonly pid: number
  readonly mode: string
  readonly granted: boolean
  readonly applicationName: string
}

/** A connection of the test's own, to look at `pg_locks` and to hold locks as "another process" would. */
export function observer(): () => pg.Client {
  let client: pg.Client | undefined
  beforeAll(async () => {
    client = new pg.Client({ connectionString: inject('databaseUrl'), application_name: 'pglock-cli-test-observer' })
    client.on('error', () => undefined)
    await client.connect()
  })
  afterAll(async () => {
    await client?.end()
  })
  return () => {
    if (!client) throw new Error('observer used outside a test')
    return client
  }
}

/** The sessions `pg_locks` shows holding or awaiting the lock of `key`. */
export async function advisoryRows(db: pg.ClientBase, key: string): Promise<AdvisoryRow[]> {
  const { classid, objid, objsubid } = pgLocksRow(resolveLockId(key))
  const { rows } = await db.query<AdvisoryRow>(
    `SELECT l.pid, l.mode, l.granted, a.application_name AS "applicationName"
       FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = $1 AND l.objid = $2 AND l.objsubid = $3
      ORDER BY l.granted DESC, l.pid`,
    [classid, objid, objsubid],
  )
  return rows
}

/** The int64 id of a string key, as a decimal string for a bound parameter. */
export const lockId = (key: string): string => String((resolveLockId(key) as { value: bigint }).value)
