/**
 * Packs the public packages and installs the tarballs into an empty folder with npm, as a user
 * would get them. Shared by `scripts/check-packages.mjs` and the README examples test
 * (`packages/testing/test/readme-examples.test.ts`).
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

export const root = resolve(import.meta.dirname, '..')

export const run = (command, args, options = {}) => execFileSync(command, args, { stdio: 'pipe', encoding: 'utf8', ...options })

/** The directories of the workspace packages that are published (not `private`). */
export function publicPackages() {
  return readdirSync(join(root, 'packages'))
    .map((name) => join(root, 'packages', name))
    .filter((dir) => {
      try {
        return !JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')).private
      } catch {
        return false
      }
    })
}

/**
 * The published packages that are not driver adapters: they take no `db`, so they neither export
 * `withLock` nor re-export the core's errors, and each names what it exports instead.
 */
export const notAdapters = new Map([
  ['@pglock/core', ['PgLockError', 'LockTimeoutError', 'resolveLockId', 'Lock']],
  ['@pglock/opentelemetry', ['instrumentPglock']],
])

/** Runs `pnpm pack` in each directory, writing the tarballs to `destination`. */
export function packPackages(dirs, destination) {
  return dirs.map((dir) => {
    const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    const output = run('pnpm', ['pack', '--pack-destination', destination], { cwd: dir })
    const tarball = output.trim().split('\n').pop()
    return { dir, manifest, tarball: resolve(dir, tarball) }
  })
}

/**
 * Creates `app` with an empty package.json and installs into it the tarballs, every peer they
 * name (other than `@pglock/*`), TypeScript 5, `@types/node` 20 and `extra` (npm specs).
 */
export function installPacked(app, packed, extra = []) {
  mkdirSync(app, { recursive: true })
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'pglock-smoke', private: true, version: '0.0.0' }))
  const specs = new Set(['typescript@5', '@types/node@20'])
  for (const { manifest } of packed) {
    for (const [name, range] of Object.entries(manifest.peerDependencies ?? {})) {
      if (!name.startsWith('@pglock/')) specs.add(`${name}@${range}`)
    }
  }
  for (const spec of extra) specs.add(spec)
  return run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', ...packed.map((p) => p.tarball), ...specs], { cwd: app })
}
