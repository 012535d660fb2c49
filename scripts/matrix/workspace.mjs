/**
 * Scratch workspaces: a copy of the repository's files (tracked and untracked, not ignored) and
 * of the packages' built `dist`, with one driver pinned for the whole workspace through
 * `pnpm.overrides`, installed from pnpm's store. Test files, the adapters' dist and every package
 * that depends on the driver then load that one version, and no other copy of it is installed.
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

/** Copies the workspace from `root` to `dest`, pins `driver` to `spec`, installs; returns the one version installed. */
export function prepareWorkspace({ root, dest, driver, spec, log }) {
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
  manifest.pnpm = { ...manifest.pnpm, overrides: { ...manifest.pnpm?.overrides, [driver]: spec } }
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
    throw new Error(`pnpm install with ${driver}@${spec} failed; see ${log}`)
  }

  const versions = installedVersions(dest, driver)
  if (versions.length !== 1) throw new Error(`expected one ${driver} in the scratch workspace, found ${versions.join(', ') || 'none'}`)
  return versions[0]
}

/** Every version of `name` in the workspace's virtual store (`node_modules/.pnpm/<name>@<version>[_peers]`). */
export function installedVersions(dir, name) {
  const prefix = `${name.replace('/', '+')}@`
  const versions = readdirSync(join(dir, 'node_modules', '.pnpm'))
    .filter((entry) => entry.startsWith(prefix))
    .map((entry) => entry.slice(prefix.length).split('_')[0])
  return [...new Set(versions)].sort()
}

/** The adapter's test files, relative to the workspace root. */
export function testFiles(dir, adapterDir) {
  return readdirSync(join(dir, adapterDir, 'test'), { recursive: true })
    .filter((file) => String(file).endsWith('.test.ts'))
    .map((file) => `${adapterDir}/test/${file}`)
    .sort()
}
