import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const INSTALL_HINT =
  'pgbouncer is not installed: the PgBouncer suite starts its own pgbouncer. Install it with `apt-get install -y pgbouncer` (Debian/Ubuntu) or `brew install pgbouncer` (macOS), or put it on PATH.'

/** A pgbouncer this process started, and how to reach and stop it. */
export interface PgBouncer {
  /** The test database's URL, with host and port pointing at pgbouncer. */
  readonly url: string
  readonly port: number
  /** Its log so far (for failure messages). */
  log(): string
  stop(): Promise<void>
}

/** Options of {@link startPgBouncer}. */
export interface PgBouncerOptions {
  /** `transaction` (the default here) hands a server connection to a client for one transaction only. */
  readonly poolMode?: 'session' | 'transaction' | 'statement'
  /** Server connections per database and user. */
  readonly poolSize?: number
}

function findBinary(): string {
  for (const candidate of ['pgbouncer', '/usr/sbin/pgbouncer', '/usr/local/bin/pgbouncer', '/opt/homebrew/bin/pgbouncer']) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' })
      return candidate
    } catch {}
  }
  throw new Error(INSTALL_HINT)
}

/** PgBouncer refuses to run as root: as root, run it as `postgres` (or `nobody`) and give that user its directory. */
function unprivilegedUser(): { name: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  for (const name of ['postgres', 'nobody']) {
    try {
      const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim())
      const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim())
      return { name, uid, gid }
    } catch {}
  }
  throw new Error('running as root, and neither a postgres nor a nobody user exists for pgbouncer to run as')
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/**
 * Starts a private pgbouncer on a free loopback port in front of the database `databaseUrl`
 * names, in transaction pooling mode unless told otherwise. Clients authenticate with
 * `auth_type = trust` (the user of `databaseUrl`, listed in a generated auth file); pgbouncer
 * logs in to Postgres with the URL's own credentials. Throws with an install hint when the
 * `pgbouncer` binary is missing.
 *
 * @example
 * ```ts
 * const bouncer = await startPgBouncer(inject('databaseUrl'), { poolMode: 'transaction', poolSize: 2 })
 * const pool = new pg.Pool({ connectionString: bouncer.url })
 * // ...
 * await bouncer.stop()
 * ```
 */
export async function startPgBouncer(databaseUrl: string, options: PgBouncerOptions = {}): Promise<PgBouncer> {
  const binary = findBinary()
  const user = unprivilegedUser()
  const target = new URL(databaseUrl)
  const dir = await mkdtemp(join(tmpdir(), 'pglock-pgbouncer-'))
  if (user) await chown(dir, user.uid, user.gid)
  const port = await freePort()
  const login = decodeURIComponent(target.username || 'postgres')
  const database = decodeURIComponent(target.pathname.slice(1) || login)
  const server = [
    `host=${target.hostname || '127.0.0.1'}`,
    `port=${target.port || 5432}`,
    `dbname=${database}`,
    `user=${login}`,
    ...(target.password ? [`password=${decodeURIComponent(target.password)}`] : []),
  ].join(' ')
  const config = [
    '[databases]',
    `${database} = ${server}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${join(dir, 'users.txt')}`,
    `pool_mode = ${options.poolMode ?? 'transaction'}`,
    `default_pool_size = ${options.poolSize ?? 2}`,
    'max_client_conn = 200',
    'ignore_startup_parameters = extra_float_digits,options,statement_timeout,lock_timeout,idle_in_transaction_session_timeout',
    `logfile = ${join(dir, 'pgbouncer.log')}`,
    `pidfile = ${join(dir, 'pgbouncer.pid')}`,
    'log_connections = 0',
    'log_disconnections = 0',
  ].join('\n')
  await writeFile(join(dir, 'users.txt'), `"${login.replaceAll('"', '""')}" ""\n`)
  await writeFile(join(dir, 'pgbouncer.ini'), `${config}\n`)
  if (user) {
    for (const file of ['users.txt', 'pgbouncer.ini']) await chown(join(dir, file), user.uid, user.gid)
  }
  const output: string[] = []
  const child: ChildProcess = spawn(binary, [...(user ? ['-u', user.name] : []), join(dir, 'pgbouncer.ini')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()))
  child.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    child.kill('SIGTERM')
    const killed = setTimeout(() => child.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(killed)
    await rm(dir, { recursive: true, force: true })
  }
  const deadline = Date.now() + 10_000
  while (!(await answers(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop()
      throw new Error(`pgbouncer did not start on port ${port}:\n${output.join('')}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const url = new URL(databaseUrl)
  url.hostname = '127.0.0.1'
  url.port = String(port)
  url.password = ''
  return { url: url.toString(), port, log: () => output.join(''), stop }
}
