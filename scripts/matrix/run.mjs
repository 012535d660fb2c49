#!/usr/bin/env node
/**
 * `pnpm test:matrix`: every adapter's conformance and reliability suites against each supported
 * driver version, on Node 20, 22, 24 and 26 and Postgres 14 to 18, as a covering design (see
 * plan.mjs). Each cell runs one adapter's test files with one driver version (a scratch copy of
 * the workspace with that version pinned), one Node binary and one Postgres server, and fails
 * unless its tests pass and its test process loaded exactly the versions the cell claims.
 *
 * Writes `.pglock-matrix/results.json` and a log per cell; a run of the whole plan also writes
 * `scripts/matrix/results.json` and the README's "Tested with" table. Closes with the line
 * `matrix: N passed, N failed` (cells) and exits non-zero when any cell failed.
 *
 * Usage: node scripts/matrix/run.mjs [--list | --table] [--only <text>]... [--include-disabled] [--jobs N] [--retries N] [--keep]
 *   --list               print the cells and what they cover, run nothing
 *   --table              regenerate the README table from scripts/matrix/results.json, run nothing
 *   --only               run the cells whose id contains the text (e.g. `pg@8.11`, `node26`, `pg16`, `kysely@`)
 *   --include-disabled   run the driver versions marked disabled in plan.mjs as well
 *   --jobs               cells run at once (default 1: the reliability suites time their assertions)
 *   --retries            further attempts for a failed cell (default 1); a retried cell is reported as such
 *   --keep               keep the scratch workspaces and Postgres data directories
 */
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { ADAPTERS, POSTGRES, planCells, uncovered } from './plan.mjs'
import { testedWith, writeReadme } from './report.mjs'
import { installNode, installPostgres, loadPg, serverUser, startPostgres } from './toolchain.mjs'
import { newestVersion, prepareWorkspace, testFiles } from './workspace.mjs'

const CELL_TIMEOUT_MS = 10 * 60_000
const root = resolve(import.meta.dirname, '../..')
const { values: options } = parseArgs({
  options: {
    list: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true, default: [] },
    'include-disabled': { type: 'boolean', default: false },
    jobs: { type: 'string', default: '1' },
    retries: { type: 'string', default: '1' },
    keep: { type: 'boolean', default: false },
    table: { type: 'boolean', default: false },
  },
})
const includeDisabled = options['include-disabled']
const full = options.only.length === 0 && !includeDisabled
const planned = planCells({ includeDisabled })
const cells = planned.filter((cell) => options.only.length === 0 || options.only.some((text) => cell.id.includes(text)))
const runnable = cells.filter((cell) => !cell.disabled)

if (options.table) {
  const written = writeReadme(
    join(root, 'README.md'),
    testedWith(JSON.parse(readFileSync(join(root, 'scripts/matrix/results.json'), 'utf8'))),
  )
  console.log(
    written ? 'matrix: README.md table regenerated from scripts/matrix/results.json' : 'matrix: README.md has no tested-with markers',
  )
  process.exit(written ? 0 : 1)
}
if (options.list) {
  for (const cell of cells) console.log(`${cell.id}${cell.disabled ? `  (disabled: ${cell.disabled})` : ''}`)
  const missing = uncovered(planned, { includeDisabled })
  console.log(
    missing.length === 0
      ? 'covers every adapter on every Node and Postgres major, and every driver version'
      : `misses: ${missing.join('; ')}`,
  )
  process.exit(0)
}
if (cells.length === 0) fail(`no cell matches --only ${options.only.join(', ')}`)
const missing = uncovered(planned, { includeDisabled })
if (missing.length > 0) fail(`the plan misses ${missing.join('; ')}`)
for (const { dir } of ADAPTERS) {
  if (!existsSync(join(root, dir, 'dist'))) fail(`${dir}/dist is missing: run \`pnpm build\` first (\`pnpm test:matrix\` does)`)
}

const started = Date.now()
// the commit the cells copy now, not whatever HEAD is when they finish
const testedCommit = commit()
const out = join(root, '.pglock-matrix')
const logs = join(out, 'logs')
mkdirSync(logs, { recursive: true })
const temp = traversableTemp()
const cache = join(temp, 'pglock-matrix-cache')
mkdirSync(cache, { recursive: true })
chmodSync(cache, 0o755)
const work = mkdtempSync(join(temp, 'pglock-matrix-'))
chmodSync(work, 0o755)

const servers = new Map()
const running = new Set()
let cleaned = false
async function cleanup() {
  if (cleaned) return
  cleaned = true
  for (const child of running) killGroup(child)
  await Promise.all([...servers.values()].map((server) => server.stop?.()))
  if (!options.keep) rmSync(work, { recursive: true, force: true })
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    console.log(`\nmatrix: ${signal}, stopping`)
    cleanup().finally(() => process.exit(130))
  })
}

console.log(`matrix: ${runnable.length} cells to run, ${cells.length - runnable.length} disabled; scratch in ${work}`)
const setup = await prepare()
const setupSeconds = seconds(Date.now() - started)
console.log(`matrix: set up in ${setupSeconds} s`)

let index = 0
const results = []
const queue = [...runnable]
const jobs = Math.max(1, Number(options.jobs) || 1)
await Promise.all(
  Array.from({ length: jobs }, async () => {
    for (let cell = queue.shift(); cell; cell = queue.shift()) {
      index += 1
      const result = await runCell(cell, index)
      results.push(result)
    }
  }),
)
await cleanup()

for (const cell of cells.filter((c) => c.disabled)) {
  results.push({ ...describeCell(cell), version: newestOrNothing(cell), status: 'disabled', reason: cell.disabled })
}
results.sort((a, b) => cells.findIndex((c) => c.id === a.id) - cells.findIndex((c) => c.id === b.id))
const passed = results.filter((r) => r.status === 'passed').length
const failed = results.filter((r) => r.status === 'failed').length
const disabled = results.filter((r) => r.status === 'disabled')
const wallSeconds = seconds(Date.now() - started)
const record = {
  finishedAt: new Date().toISOString(),
  commit: testedCommit,
  full,
  wallSeconds,
  setupSeconds,
  node: Object.fromEntries([...setup.nodes].map(([major, node]) => [major, node.version ?? null])),
  postgres: Object.fromEntries([...servers].map(([major, server]) => [major, server.version ?? null])),
  passed,
  failed,
  disabled: disabled.length,
  cells: results,
}
writeFileSync(join(out, 'results.json'), `${JSON.stringify(record, null, 2)}\n`)
if (full) {
  const kept = join(root, 'scripts/matrix/results.json')
  writeFileSync(kept, `${JSON.stringify(record, null, 2)}\n`)
  spawnSync(join(root, 'node_modules/.bin/biome'), ['format', '--write', kept], { cwd: root })
  if (!writeReadme(join(root, 'README.md'), testedWith(record)))
    console.log('matrix: README.md has no tested-with markers; table not written')
}

console.log('\nmatrix: cells')
for (const r of results) {
  const what = r.status === 'disabled' ? `disabled: ${r.reason}` : `${r.status}${r.attempts > 1 ? ` on attempt ${r.attempts}` : ''}`
  const time = r.seconds === undefined ? '' : `${r.seconds.toFixed(1).padStart(7)} s  `
  console.log(`  ${time.padStart(11)}${r.id.padEnd(44)} ${what}${r.status === 'failed' ? `: ${r.reason}` : ''}`)
}
console.log(
  `\nmatrix: wall time ${wallSeconds} s (setup ${setupSeconds} s); results in .pglock-matrix/results.json${full ? ', table in README.md' : ''}`,
)
if (disabled.length > 0) console.log(`matrix: ${disabled.length} disabled`)
console.log(`matrix: ${passed} passed, ${failed} failed`)
process.exit(failed > 0 || passed === 0 ? 1 : 0)

/** Installs the Node binaries, starts one Postgres per major, and prepares one scratch workspace per driver version. */
async function prepare() {
  const nodes = new Map()
  for (const major of new Set(runnable.map((cell) => cell.node))) {
    try {
      nodes.set(major, installNode(cache, major))
      console.log(`matrix: Node ${major}: ${nodes.get(major).version}`)
    } catch (error) {
      nodes.set(major, { error: `Node ${major}: ${error.message}` })
      console.log(`matrix: Node ${major} unavailable: ${error.message}`)
    }
  }

  const user = serverUser()
  const pg = loadPg(root)
  await Promise.all(
    [...new Set(runnable.map((cell) => cell.postgres))].map(async (major) => {
      const { build } = POSTGRES.find((p) => p.major === major)
      try {
        const bin = installPostgres(cache, build)
        const dir = join(work, `postgres-${major}`)
        servers.set(major, await startPostgres({ bin, dir, user, pg }))
        console.log(`matrix: Postgres ${major}: ${servers.get(major).version} at ${servers.get(major).url}`)
      } catch (error) {
        servers.set(major, { error: `Postgres ${major}: ${error.message}` })
        console.log(`matrix: Postgres ${major} unavailable: ${error.message}`)
      }
    }),
  )

  const workspaces = new Map()
  for (const cell of runnable) {
    const key = `${cell.driver}@${cell.entry}`
    if (workspaces.has(key)) continue
    const dest = join(work, `ws-${workspaces.size + 1}`)
    const begun = Date.now()
    try {
      const version = newestVersion(cell.driver, cell.spec)
      const pinned = Object.fromEntries(Object.entries(cell.with ?? {}).map(([name, spec]) => [name, newestVersion(name, spec)]))
      prepareWorkspace({ root, dest, driver: cell.driver, version, pinned, log: join(logs, `install-${slug(key)}.log`) })
      workspaces.set(key, { dir: dest, version, pinned })
      const also = Object.entries(pinned).map(([name, v]) => `, ${name} ${v}`)
      console.log(
        `matrix: workspace with ${cell.driver} ${version} (${cell.entry})${also.join('')} ready in ${seconds(Date.now() - begun)} s`,
      )
    } catch (error) {
      workspaces.set(key, { error: error.message })
      console.log(`matrix: workspace with ${key} failed: ${error.message}`)
    }
  }
  return { nodes, workspaces }
}

async function runCell(cell, n) {
  const label = `[${String(n).padStart(2)}/${runnable.length}] ${cell.id}`
  const node = setup.nodes.get(cell.node)
  const server = servers.get(cell.postgres)
  const workspace = setup.workspaces.get(`${cell.driver}@${cell.entry}`)
  const base = { ...describeCell(cell), nodeVersion: node.version, serverVersion: server.version, version: workspace.version }
  const broken = node.error ?? server.error ?? workspace.error
  if (broken) {
    console.log(`${label}: failed before it started: ${broken}`)
    return { ...base, status: 'failed', reason: broken, attempts: 0 }
  }
  const retries = Math.max(0, Number(options.retries) || 0)
  const attempts = []
  for (let attempt = 1; attempt <= retries + 1; attempt += 1) {
    console.log(
      `${label}: ${cell.driver} ${workspace.version} on Node ${node.version}, Postgres ${server.version}${attempt > 1 ? `, attempt ${attempt}` : ''}`,
    )
    const result = await attemptCell(cell, { node, server, workspace, attempt })
    attempts.push(result)
    const counts = result.tests
      ? `${result.tests.passed} passed, ${result.tests.failed} failed, ${result.tests.skipped} skipped`
      : 'no report'
    console.log(
      `${' '.repeat(label.length)}  ${result.status} in ${result.seconds.toFixed(1)} s (${counts})${result.reason ? `: ${result.reason}` : ''}`,
    )
    if (result.status === 'passed') break
    console.log(tail(result.log, 25))
  }
  const last = attempts.at(-1)
  return {
    ...base,
    ...last,
    attempts: attempts.length,
    seconds: seconds(attempts.reduce((sum, a) => sum + a.seconds * 1000, 0)),
    earlier: attempts.slice(0, -1).map(({ reason, seconds: s, log }) => ({ reason, seconds: s, log })),
  }
}

async function attemptCell(cell, { node, server, workspace, attempt }) {
  const name = `${slug(cell.id)}${attempt > 1 ? `.attempt${attempt}` : ''}`
  const log = join(logs, `${name}.log`)
  const probe = join(work, `${name}.probe.json`)
  const report = join(work, `${name}.report.json`)
  const files = testFiles(workspace.dir, cell.dir)
  const env = {
    ...process.env,
    PATH: `${node.bin}${delimiter}${process.env.PATH}`,
    PGLOCK_TEST_DATABASE_URL: server.url,
    PGLOCK_MATRIX_PROBE: probe,
    PGLOCK_MATRIX_REPORT: report,
    NO_COLOR: '1',
    TMPDIR: temp,
  }
  delete env.DATABASE_URL
  delete env.FORCE_COLOR
  const begun = Date.now()
  const fd = openSync(log, 'w')
  const child = spawn(
    join(node.bin, 'node'),
    [join(workspace.dir, 'node_modules/vitest/vitest.mjs'), 'run', '--config', 'scripts/matrix/vitest.config.ts', ...files],
    { cwd: workspace.dir, env, stdio: ['ignore', fd, fd], detached: true },
  )
  running.add(child)
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    killGroup(child)
  }, CELL_TIMEOUT_MS)
  const code = await new Promise((done) => child.once('exit', (exitCode, signal) => done(exitCode ?? signal)))
  clearTimeout(timer)
  running.delete(child)
  closeSync(fd)
  const elapsed = seconds(Date.now() - begun)

  const tests = readJson(report)
  const loaded = readJson(probe)
  const counts = tests && {
    passed: tests.numPassedTests,
    failed: tests.numFailedTests,
    skipped: tests.numPendingTests + tests.numTodoTests,
    failedFiles: tests.testResults.filter((file) => file.status !== 'passed').map((file) => file.name.slice(workspace.dir.length + 1)),
  }
  const problems = []
  if (timedOut) problems.push(`timed out after ${CELL_TIMEOUT_MS / 60_000} min`)
  else if (code !== 0) problems.push(`vitest exited with ${code}`)
  if (counts?.failed) problems.push(`${counts.failed} tests failed`)
  if (counts?.failedFiles.length) problems.push(`failed files: ${counts.failedFiles.join(', ')}`)
  problems.push(...checkProbe(cell, loaded, { node, server, workspace }))
  return {
    status: problems.length === 0 ? 'passed' : 'failed',
    reason: problems.join('; ') || undefined,
    seconds: elapsed,
    tests: counts,
    files,
    loaded: loaded?.loaded,
    probedNode: loaded?.node,
    probedServer: loaded?.server,
    log: log.slice(root.length + 1),
  }
}

/** What the test process saw against what the cell claims: its Node, its server, and one version of its driver everywhere. */
function checkProbe(cell, loaded, { node, server, workspace }) {
  if (!loaded) return ['no probe record: the test process did not reach its global setup']
  const problems = []
  if (loaded.node !== `v${node.version}`) problems.push(`probe: ran on Node ${loaded.node}, not ${node.version}`)
  if (loaded.server !== server.version) problems.push(`probe: talked to Postgres ${loaded.server}, not ${server.version}`)
  const seen = Object.entries(loaded.loaded).flatMap(([from, versions]) => (versions[cell.driver] ? [[from, versions[cell.driver]]] : []))
  if (!seen.some(([from]) => from === cell.dir)) problems.push(`probe: ${cell.dir} does not resolve ${cell.driver}`)
  for (const [from, version] of seen) {
    if (version !== workspace.version) problems.push(`probe: ${from} loads ${cell.driver} ${version}, not ${workspace.version}`)
  }
  for (const [name, pinned] of Object.entries(workspace.pinned ?? {})) {
    const found = loaded.loaded[cell.dir]?.[name]
    if (found !== pinned) problems.push(`probe: ${cell.dir} loads ${name} ${found ?? 'nothing'}, not ${pinned}`)
  }
  return problems
}

/** What a disabled cell would run, for the table; nothing when the registry cannot say. */
function newestOrNothing(cell) {
  try {
    return newestVersion(cell.driver, cell.spec)
  } catch {
    return undefined
  }
}

/**
 * The temp folder to work in. As root the servers run as the OS user `postgres`, who must reach
 * their binaries and data: a private TMPDIR (mode 0700 somewhere above it) gives way to /tmp.
 */
function traversableTemp() {
  const reachable = (dir) => dir.split('/').every((_, i, parts) => (statSync(parts.slice(0, i + 1).join('/') || '/').mode & 0o001) !== 0)
  if (process.getuid?.() !== 0 || reachable(tmpdir())) return tmpdir()
  if (reachable('/tmp')) return '/tmp'
  fail(`neither ${tmpdir()} nor /tmp can be reached by the postgres user; set TMPDIR to a world-traversable folder`)
}

function describeCell(cell) {
  const { id, adapter, package: pkg, dir, driver, spec, entry, node, postgres } = cell
  return { id, adapter, package: pkg, dir, driver, spec, entry, with: cell.with, node, postgres }
}

function killGroup(child) {
  try {
    process.kill(-child.pid, 'SIGKILL')
  } catch {
    // already gone
  }
}

function readJson(path) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return undefined
  }
}

function tail(path, lines) {
  try {
    const text = readFileSync(join(root, path), 'utf8').trimEnd().split('\n').slice(-lines)
    return text.map((line) => `      | ${line}`).join('\n')
  } catch {
    return ''
  }
}

function commit() {
  const git = (...args) => spawnSync('git', args, { cwd: root, encoding: 'utf8' }).stdout?.trim() ?? ''
  const head = git('rev-parse', '--short', 'HEAD') || 'unknown'
  return git('status', '--porcelain', '--untracked-files=no') ? `${head}+changes` : head
}

function slug(text) {
  return text.replace(/[^0-9a-z.@+-]+/gi, '_')
}

function seconds(ms) {
  return Math.round(ms / 100) / 10
}

function fail(message) {
  console.error(`matrix: ${message}`)
  console.log('matrix: 0 passed, 1 failed')
  process.exit(1)
}
