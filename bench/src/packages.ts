/**
 * Which `@pglock/*` the bench loads: by default the tarballs `pnpm pack` makes of the public
 * packages, as users get them from npm; with `--workspace`, the workspace-linked `dist`. See
 * bench/README.md, "Packed packages".
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
} from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { publicPackages, root } from '../../scripts/pack.mjs'

/** The flag that picks the workspace `dist`, and the variable that carries the choice to child processes. */
const WORKSPACE_FLAG = '--workspace'
const PACKAGES_ENV = 'PGLOCK_BENCH_PACKAGES'

const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url))
const PACKED_DIR = join(BENCH_DIR, '.packed')
/** Packed trees kept, the one in use included, so that another run still loading from an older one is not cut short. */
const KEEP_PACKED = 3

export interface BenchPackages {
  readonly mode: 'packed' | 'workspace'
  /** The names of the public packages, e.g. `@pglock/pg`. */
  readonly names: readonly string[]
  /** Packed mode: the directory whose `node_modules` holds the unpacked tarballs. */
  readonly packedRoot?: string
  /** One line for a report's header. */
  readonly description: string
}

interface Manifest {
  readonly name: string
  readonly version: string
  readonly dependencies?: Readonly<Record<string, string>>
  readonly exports?: Readonly<Record<string, unknown>>
}

function git(args: readonly string[]): string {
  try {
    return execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return ''
  }
}

/** The commit the packages come from, and whether `packages/` differs from it. */
function source(): string {
  const sha = git(['rev-parse', '--short', 'HEAD']) || 'an unknown commit'
  return git(['status', '--porcelain', '--', 'packages']) === '' ? sha : `${sha} with uncommitted changes in packages/`
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((file) => join(dir, file))
    .filter((file) => statSync(file).isFile())
}

/** A hash of what `pnpm pack` puts in each tarball (package.json, README, LICENSE, dist), so a tree is packed once per build. */
function fingerprint(dirs: readonly string[]): string {
  const hash = createHash('sha256')
  for (const dir of dirs) {
    if (!existsSync(join(dir, 'dist'))) throw new Error(`${relative(root, dir)} has no dist: run pnpm build first`)
    const files = [...['package.json', 'README.md', 'LICENSE'].map((file) => join(dir, file)), ...filesUnder(join(dir, 'dist'))]
    for (const file of files.filter((file) => existsSync(file)).sort()) {
      hash.update(relative(root, file)).update('\0').update(readFileSync(file)).update('\0')
    }
  }
  return hash.digest('hex').slice(0, 12)
}

/** Packs the public packages with `pnpm pack` and unpacks each tarball as npm would install it, into `<target>/node_modules`. */
function packInto(dirs: readonly string[], target: string): void {
  mkdirSync(PACKED_DIR, { recursive: true })
  const work = mkdtempSync(join(PACKED_DIR, 'tmp-'))
  try {
    const tarballs = join(work, 'tarballs')
    const filters = dirs.flatMap((dir) => ['--filter', `./${relative(root, dir)}`])
    const output = execFileSync('pnpm', ['-r', ...filters, 'pack', '--pack-destination', tarballs, '--json'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const packed = JSON.parse(output) as { name: string; filename: string }[] | { name: string; filename: string }
    const list = Array.isArray(packed) ? packed : [packed]
    const names = new Set(list.map(({ name }) => name))
    for (const { name, filename } of list) {
      const into = join(work, 'node_modules', name)
      mkdirSync(into, { recursive: true })
      execFileSync('tar', ['-xzf', filename, '-C', into, '--strip-components=1'])
      const manifest = JSON.parse(readFileSync(join(into, 'package.json'), 'utf8')) as Manifest
      // peers resolve to the bench's own drivers; a dependency outside @pglock would need an install
      const missing = Object.keys(manifest.dependencies ?? {}).filter((dependency) => !names.has(dependency))
      if (missing.length > 0) throw new Error(`${name} depends on ${missing.join(', ')}, which the packed tree does not install`)
    }
    rmSync(tarballs, { recursive: true, force: true })
    try {
      renameSync(work, target)
    } catch (error) {
      // another run packed the same build first
      if (!existsSync(target)) throw error
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

function pruneOlder(keep: string): void {
  const trees = readdirSync(PACKED_DIR)
    .filter((name) => !name.startsWith('tmp-'))
    .map((name) => join(PACKED_DIR, name))
    .filter((dir) => dir !== keep)
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
  for (const dir of trees.slice(KEEP_PACKED - 1)) rmSync(dir, { recursive: true, force: true })
}

let chosen: BenchPackages | undefined

/**
 * The packages this process loads, packing them first when the build changed. The choice is
 * `--workspace` on the command line, else what the parent process chose (children inherit it).
 */
export function benchPackages(argv: readonly string[] = process.argv): BenchPackages {
  if (chosen !== undefined) return chosen
  // the libraries the bench can load; a command-only package (`@pglock/cli`) is nothing to import
  const dirs = publicPackages().filter(
    (dir) => (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest).exports?.['.'] !== undefined,
  )
  const names = dirs.map((dir) => (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest).name)
  const inherited = process.env[PACKAGES_ENV]
  if (argv.includes(WORKSPACE_FLAG) || inherited === 'workspace') {
    process.env[PACKAGES_ENV] = 'workspace'
    chosen = { mode: 'workspace', names, description: `packages: workspace dist of ${source()} (${WORKSPACE_FLAG})` }
    return chosen
  }
  const packedRoot = inherited !== undefined && existsSync(inherited) ? inherited : join(PACKED_DIR, fingerprint(dirs))
  if (existsSync(packedRoot)) {
    // marks the tree as in use, so that pruning keeps it
    utimesSync(packedRoot, new Date(), new Date())
  } else {
    packInto(dirs, packedRoot)
    pruneOlder(packedRoot)
  }
  process.env[PACKAGES_ENV] = packedRoot
  chosen = {
    mode: 'packed',
    names,
    packedRoot,
    description: `packages: packed tarballs of ${source()} (bench/${relative(BENCH_DIR, packedRoot)}; ${WORKSPACE_FLAG} for the workspace dist)`,
  }
  return chosen
}

/** The version and real directory of the package `name` that Node finds from `from`, read past its `exports` map. */
function installed(from: string, name: string): { version: string; dir: string } | undefined {
  for (let dir = from; dir !== dirname(dir); dir = dirname(dir)) {
    const found = join(dir, 'node_modules', name)
    if (existsSync(join(found, 'package.json')))
      return { version: (JSON.parse(readFileSync(join(found, 'package.json'), 'utf8')) as Manifest).version, dir: realpathSync(found) }
  }
  return undefined
}

/** The drivers and ORMs the bench loads, and the postgres.js under kysely-postgres-js and Drizzle, for a report's header. */
export function driverVersions(): string {
  const from = join(BENCH_DIR, 'src')
  const version = (name: string, under?: string) => {
    const found = installed(from, name)
    if (found === undefined) return `${name} (not installed)`
    const driver = under === undefined ? undefined : installed(found.dir, under)
    return `${name} ${found.version}${driver === undefined ? '' : ` over ${under} ${driver.version}`}`
  }
  return `drivers: ${[version('pg'), version('postgres'), version('drizzle-orm'), version('kysely'), version('kysely-postgres-js', 'postgres')].join(', ')}`
}
