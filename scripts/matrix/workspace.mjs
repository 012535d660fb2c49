/**
 * Scratch workspaces: a copy of the repository's files (tracked and untracked, not ignored) and
 * of the packages' built `dist`, with one driver pinned for the whole workspace through
 * `pnpm.overrides`, installed through pnpm's store. Test files, the adapters' dist and every package
 * that depends on the driver then load that one version, and no other copy of it is installed.
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

/**
 * The newest published version of `driver` that `spec` allows, from the registry: pinning the
 * exact version keeps the lockfile from holding an older one that also satisfies `spec`. Snapshot
 * builds (a prerelease ending in `-<commit>`, as drizzle-orm publishes one per commit) are skipped.
 */
export function newestVersion(driver, spec) {
  const found = JSON.parse(
    execFileSync('npm', ['view', `${driver}@${spec}`, 'version', '--json'], { encoding: 'utf8', stdio: 'pipe' }) || '[]',
  )
  const versions = [found].flat().filter((version) => !/-[0-9a-f]{7,}$/.test(version))
  if (versions.length === 0) throw new Error(`no published ${driver} matches ${spec}`)
  return versions.sort(compareVersions).at(-1)
}

/** Semver precedence, for the plain `x.y.z[-pre.n]` versions drivers publish. */
function compareVersions(a, b) {
  const [mainA, preA] = split(a)
  const [mainB, preB] = split(b)
  for (let i = 0; i < 3; i += 1) if (mainA[i] !== mainB[i]) return mainA[i] - mainB[i]
  if (!preA || !preB) return preA ? -1 : preB ? 1 : 0
  for (let i = 0; i < Math.max(preA.length, preB.length); i += 1) {
    const [x, y] = [preA[i], preB[i]]
    if (x === undefined || y === undefined) return x === undefined ? -1 : 1
    if (x === y) continue
    const [nx, ny] = [Number(x), Number(y)]
    if (Number.isInteger(nx) && Number.isInteger(ny)) return nx - ny
    return Number.isInteger(nx) ? -1 : Number.isInteger(ny) ? 1 : x < y ? -1 : 1
  }
  return 0
}

function split(version) {
  const [main, pre] = version.split('+')[0].split(/-(.*)/s)
  return [main.split('.').map(Number), pre ? pre.split('.') : undefined]
}

/**
 * Copies the workspace from `root` to `dest`, pins `driver` to exactly `version` (and each package
 * of `pinned` to its version), installs, and checks no other copy got in.
 */
export function prepareWorkspace({ root, dest, driver, version, pinned = {}, log }) {
  const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' })
    .split('\0')
    .filter((file) => file && existsSync(join(root, file)))
  for (const file of files) {
    mkdirSync(dirname(join(dest, file)), { recursive: true })
    copyFileSync(join(root, file), join(dest, file))
  }
  for (const name of readdirSync(join(root, 'packages'))) {
    const dist = join(root, 'packages', name, 'dist')
    if (existsSync(dist)) cpSync(dist, join(dest, 'packages', name, 'dist'), { recursive: true })
  }

  const manifestPath = join(dest, 'package.json')
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'))
  manifest.pnpm = { ...manifest.pnpm, overrides: { ...manifest.pnpm?.overrides, ...pinned, [driver]: version } }
  writeFileSync(manifestPath, `${JSON.stringify(manifest, null, 2)}\n`)

  try {
    const output = execFileSync('pnpm', ['install', '--no-frozen-lockfile', '--reporter=append-only'], {
      cwd: dest,
      encoding: 'utf8',
      stdio: 'pipe',
    })
    writeFileSync(log, output)
  } catch (error) {
    writeFileSync(log, `${error.stdout ?? ''}${error.stderr ?? ''}`)
    throw new Error(`pnpm install with ${driver}@${version} failed; see ${log}`)
  }

  for (const [name, expected] of [[driver, version], ...Object.entries(pinned)]) {
    const versions = installedVersions(dest, name)
    if (versions.length !== 1 || versions[0] !== expected) {
      throw new Error(`expected only ${name} ${expected} in the scratch workspace, found ${versions.join(', ') || 'none'}`)
    }
  }
}

/** Every version of `name` in the workspace's virtual store (`node_modules/.pnpm/<name>@<version>[_peers]`). */
export function installedVersions(dir, name) {
  const prefix = `${name.replace('/', '+')}@`
  const versions = readdirSync(join(dir, 'node_modules', '.pnpm'))
    .filter((entry) => entry.startsWith(prefix))
    .map((entry) => entry.slice(prefix.length).split('_')[0])
  return [...new Set(versions)].sort()
}

/**
 * The adapter's test files, relative to the workspace root. The conformance suite in multiplexed
 * mode (`multiplexed-conformance.test.ts`) repeats the driver calls of the plain one: it runs in
 * `pnpm test`, once per adapter, which keeps CI's matrix within its time; the multiplex suite itself
 * runs in every cell.
 */
export function testFiles(dir, adapterDir) {
  return readdirSync(join(dir, adapterDir, 'test'), { recursive: true })
    .filter((file) => String(file).endsWith('.test.ts') && !String(file).endsWith('multiplexed-conformance.test.ts'))
    .map((file) => `${adapterDir}/test/${file}`)
    .sort()
}
