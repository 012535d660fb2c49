import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { probeDocker } from './database.ts'

const INSTALL_HINT =
  'Install it with `apt-get install -y pgbouncer` (Debian/Ubuntu) or `brew install pgbouncer` (macOS), or put it on PATH, ' +
  'or name the binary in PGLOCK_TEST_PGBOUNCER.'

/** The binaries looked for when `PGLOCK_TEST_PGBOUNCER` is unset, and after a package manager installed one. */
const STANDARD_BINARIES = ['pgbouncer', '/usr/sbin/pgbouncer', '/usr/local/bin/pgbouncer', '/opt/homebrew/bin/pgbouncer']

const CONTAINER_IMAGE = 'edoburu/pgbouncer:1.23.1'
const CONTAINER_PORT = 6432
const APT_LOCK_TIMEOUT_S = 300

/**
 * How this run gets PgBouncer, decided once by {@link resolvePgBouncer} in the global setup and
 * handed to every test file as `inject('pgbouncer')`. Plain data, so vitest can pass it on.
 */
export type PgBouncerRuntime =
  | { readonly kind: 'binary'; readonly path: string; readonly version: string; readonly source: 'installed' | 'apt-get' }
  | { readonly kind: 'container'; readonly image: string }
  | { readonly kind: 'unavailable'; readonly reason: string }

declare module 'vitest' {
  export interface ProvidedContext {
    /** How the PgBouncer suites start pgbouncer (see `resolvePgBouncer`). */
    pgbouncer: PgBouncerRuntime
  }
}

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
  /**
   * How to run pgbouncer: the run's `inject('pgbouncer')`. When omitted, an installed binary is
   * looked for, and nothing is installed.
   */
  readonly runtime?: PgBouncerRuntime
}

/** Options of {@link resolvePgBouncer}. */
export interface ResolvePgBouncerOptions {
  /** Where progress goes ("installing pgbouncer with apt-get ..."). */
  readonly say?: (line: string) => void
}

/**
 * Finds a way to run PgBouncer for the tests, the way the test-database resolver finds Postgres:
 * 1. an installed `pgbouncer`: the binary named by `PGLOCK_TEST_PGBOUNCER`, else the first of
 *    `pgbouncer` on PATH and its usual install paths that answers `--version`;
 * 2. a container (`edoburu/pgbouncer`, or `PGLOCK_TEST_PGBOUNCER_IMAGE`) when a Docker engine answers;
 * 3. the system package manager when it can run: as root on Debian or Ubuntu, `apt-get install -y
 *    pgbouncer`, announced before it starts;
 * 4. otherwise `{ kind: 'unavailable' }` with what was tried and the install hint: the PgBouncer
 *    suites then fail with that message, and every other suite still runs.
 *
 * `PGLOCK_TEST_PGBOUNCER` pointing at a missing binary makes the resolver carry on as if none
 * were installed, which is how the later steps are tested on a machine that has one.
 *
 * @example
 * ```ts
 * // vitest global setup
 * const pgbouncer = await resolvePgBouncer({ say: console.log })
 * project.provide('pgbouncer', pgbouncer)
 * ```
 */
export async function resolvePgBouncer(options: ResolvePgBouncerOptions = {}): Promise<PgBouncerRuntime> {
  const say = options.say ?? (() => undefined)
  const override = process.env.PGLOCK_TEST_PGBOUNCER
  const tried: string[] = []

  const installed = await findBinary(override ? [override] : STANDARD_BINARIES)
  if (installed) return { kind: 'binary', ...installed, source: 'installed' }
  tried.push(
    override ? `PGLOCK_TEST_PGBOUNCER=${override}: does not run` : `no pgbouncer on PATH or in ${STANDARD_BINARIES.slice(1).join(', ')}`,
  )

  const docker = await probeDocker()
  if (docker.ok) return { kind: 'container', image: process.env.PGLOCK_TEST_PGBOUNCER_IMAGE || CONTAINER_IMAGE }
  tried.push(`testcontainers: skipped, no Docker engine answered (${docker.reason})`)

  const apt = await aptGetCanRun()
  if (apt.ok) {
    say('pglock tests: installing pgbouncer with apt-get (the PgBouncer suites need it)')
    const failure = await aptGetInstall('pgbouncer')
    const found = failure ? undefined : await findBinary(STANDARD_BINARIES)
    if (found) return { kind: 'binary', ...found, source: 'apt-get' }
    tried.push(`apt-get install -y pgbouncer: ${failure ?? 'finished, but no pgbouncer binary was found afterwards'}`)
  } else {
    tried.push(`package manager: skipped, ${apt.reason}`)
  }

  return {
    kind: 'unavailable',
    reason: [
      'pgbouncer could not be had, and the PgBouncer suites start their own. Tried, in order:',
      ...tried.map((line) => `  - ${line}`),
      INSTALL_HINT,
    ].join('\n'),
  }
}

async function findBinary(candidates: readonly string[]): Promise<{ path: string; version: string } | undefined> {
  for (const candidate of candidates) {
    const result = await run(candidate, ['--version'])
    if (result.code === 0) return { path: onPath(candidate), version: result.output.split('\n')[0]?.trim() || 'pgbouncer' }
  }
  return undefined
}

/** `name`'s full path when it is a bare name found on PATH, so that the log says which binary runs. */
function onPath(name: string): string {
  if (name.includes('/')) return name
  const dirs = (process.env.PATH ?? '').split(delimiter).filter(Boolean)
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path)) ?? name
}

async function aptGetCanRun(): Promise<{ ok: true } | { ok: false; reason: string }> {
  if (process.platform !== 'linux') return { ok: false, reason: `no package manager is used on ${process.platform}` }
  if ((await run('apt-get', ['--version'])).code !== 0) return { ok: false, reason: 'apt-get is not available' }
  if (process.getuid?.() !== 0) return { ok: false, reason: 'apt-get needs root, and the tests are not running as root' }
  return { ok: true }
}

/** Resolves `undefined` once the package is installed, else apt-get's last lines. Refreshes the package lists once if needed. */
async function aptGetInstall(name: string): Promise<string | undefined> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const lock = ['-o', `DPkg::Lock::Timeout=${APT_LOCK_TIMEOUT_S}`]
  const install = () => run('apt-get', [...lock, 'install', '-y', '-q', '--no-install-recommends', name], env)
  let result = await install()
  if (result.code !== 0) {
    const update = await run('apt-get', [...lock, 'update', '-q'], env)
    if (update.code !== 0) return `apt-get update failed: ${tail(update.output)}`
    result = await install()
  }
  return result.code === 0 ? undefined : tail(result.output)
}

function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { env, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 127) : 0
      resolve({ code, output: `${stdout}${stderr}${error && !stdout && !stderr ? error.message : ''}` })
    })
  })
}

function tail(output: string): string {
  return output.trim().split('\n').slice(-5).join(' / ')
}

/** PgBouncer refuses to run as root: as root, run it as `postgres` (or `nobody`) and give that user its directory. */
async function unprivilegedUser(): Promise<{ name: string; uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined
  for (const name of ['postgres', 'nobody']) {
    const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])])
    if (uid.code === 0 && gid.code === 0) return { name, uid: Number(uid.output.trim()), gid: Number(gid.output.trim()) }
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

/** The pgbouncer.ini and auth file for one pgbouncer in front of `databaseUrl`, reaching it at `serverHost`. */
function configure(databaseUrl: string, options: PgBouncerOptions, listen: { addr: string; port: number }, serverHost: string) {
  const target = new URL(databaseUrl)
  const login = decodeURIComponent(target.username || 'postgres')
  const database = decodeURIComponent(target.pathname.slice(1) || login)
  const server = [
    `host=${serverHost}`,
    `port=${target.port || 5432}`,
    `dbname=${database}`,
    `user=${login}`,
    ...(target.password ? [`password=${decodeURIComponent(target.password)}`] : []),
  ].join(' ')
  const settings = (authFile: string, logFile?: string, pidFile?: string) =>
    [
      '[databases]',
      `${database} = ${server}`,
      '[pgbouncer]',
      `listen_addr = ${listen.addr}`,
      `listen_port = ${listen.port}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${authFile}`,
      `pool_mode = ${options.poolMode ?? 'transaction'}`,
      `default_pool_size = ${options.poolSize ?? 2}`,
      'max_client_conn = 200',
      'ignore_startup_parameters = extra_float_digits,options,statement_timeout,lock_timeout,idle_in_transaction_session_timeout',
      ...(logFile ? [`logfile = ${logFile}`] : []),
      ...(pidFile ? [`pidfile = ${pidFile}`] : []),
      'log_connections = 0',
      'log_disconnections = 0',
      '',
    ].join('\n')
  return { users: `"${login.replaceAll('"', '""')}" ""\n`, settings }
}

/**
 * Starts a private pgbouncer in front of the database `databaseUrl` names, in transaction pooling
 * mode unless told otherwise: a local process on a free loopback port, or a container, as
 * `options.runtime` says. Clients authenticate with `auth_type = trust` (the user of
 * `databaseUrl`, listed in a generated auth file); pgbouncer logs in to Postgres with the URL's
 * own credentials. Throws the resolver's reason when pgbouncer could not be had.
 *
 * @example
 * ```ts
 * const bouncer = await startPgBouncer(inject('databaseUrl'), { poolMode: 'transaction', poolSize: 2, runtime: inject('pgbouncer') })
 * const pool = new pg.Pool({ connectionString: bouncer.url })
 * // ...
 * await bouncer.stop()
 * ```
 */
export async function startPgBouncer(databaseUrl: string, options: PgBouncerOptions = {}): Promise<PgBouncer> {
  const runtime = options.runtime ?? (await installedRuntime())
  if (runtime.kind === 'unavailable') throw new Error(runtime.reason)
  if (runtime.kind === 'container') return startContainer(databaseUrl, options, runtime.image)
  return startProcess(databaseUrl, options, runtime.path)
}

async function installedRuntime(): Promise<PgBouncerRuntime> {
  const override = process.env.PGLOCK_TEST_PGBOUNCER
  const found = await findBinary(override ? [override] : STANDARD_BINARIES)
  return found
    ? { kind: 'binary', ...found, source: 'installed' }
    : { kind: 'unavailable', reason: `pgbouncer is not installed. ${INSTALL_HINT}` }
}

async function startProcess(databaseUrl: string, options: PgBouncerOptions, binary: string): Promise<PgBouncer> {
  const user = await unprivilegedUser()
  const dir = await mkdtemp(join(tmpdir(), 'pglock-pgbouncer-'))
  if (user) await chown(dir, user.uid, user.gid)
  const port = await freePort()
  const { users, settings } = configure(databaseUrl, options, { addr: '127.0.0.1', port }, new URL(databaseUrl).hostname || '127.0.0.1')
  await writeFile(join(dir, 'users.txt'), users)
  await writeFile(join(dir, 'pgbouncer.ini'), settings(join(dir, 'users.txt'), join(dir, 'pgbouncer.log'), join(dir, 'pgbouncer.pid')))
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

/** A database on this machine is reached from a container through Testcontainers' host port forwarding. */
async function startContainer(databaseUrl: string, options: PgBouncerOptions, image: string): Promise<PgBouncer> {
  const { GenericContainer, TestContainers, Wait } = await import('testcontainers')
  const target = new URL(databaseUrl)
  const local = ['localhost', '127.0.0.1', '[::1]', ''].includes(target.hostname)
  if (local) await TestContainers.exposeHostPorts(Number(target.port || 5432))
  const { users, settings } = configure(
    databaseUrl,
    options,
    { addr: '0.0.0.0', port: CONTAINER_PORT },
    local ? 'host.testcontainers.internal' : target.hostname,
  )
  const output: string[] = []
  const container = await new GenericContainer(image)
    .withCopyContentToContainer([
      { content: users, target: '/etc/pgbouncer/userlist.txt', mode: 0o644 },
      { content: settings('/etc/pgbouncer/userlist.txt'), target: '/etc/pgbouncer/pgbouncer.ini', mode: 0o644 },
    ])
    .withExposedPorts(CONTAINER_PORT)
    .withWaitStrategy(Wait.forListeningPorts())
    .withLogConsumer((stream) => stream.on('data', (chunk: Buffer | string) => output.push(chunk.toString())))
    .start()
  let stopped = false
  const url = new URL(databaseUrl)
  url.hostname = container.getHost()
  url.port = String(container.getMappedPort(CONTAINER_PORT))
  url.password = ''
  return {
    url: url.toString(),
    port: container.getMappedPort(CONTAINER_PORT),
    log: () => output.join(''),
    async stop() {
      if (stopped) return
      stopped = true
      await container.stop()
    },
  }
}
