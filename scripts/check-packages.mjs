#!/usr/bin/env node
/**
 * Checks what users install, not what the workspace sees: packs every public package, runs
 * publint --strict and attw on it, installs the tarballs with npm into an empty folder, loads
 * each one from CommonJS and ESM, and compiles strict consumers against the installed
 * declarations on TypeScript 5.2, 5.9 and 7 (check-types.mjs).
 *
 * Usage: node scripts/check-packages.mjs [package-dir ...]   (default: every public package)
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { checkTypes } from './check-types.mjs'
import { installPacked, notAdapters, packPackages, publicPackages, root, run } from './pack.mjs'

const dirs = process.argv.slice(2).length > 0 ? process.argv.slice(2).map((dir) => resolve(dir)) : publicPackages()
const work = mkdtempSync(join(tmpdir(), 'pglock-pack-'))
let failures = 0

try {
  const packed = packPackages(dirs, work)

  for (const { dir, manifest } of packed) {
    step(`${manifest.name}: publint --strict`, () => run('pnpm', ['exec', 'publint', '--strict', dir], { cwd: root }))
    step(`${manifest.name}: attw --pack`, () =>
      run('pnpm', ['exec', 'attw', '--pack', dir, '--profile', 'node16', '--format', 'table-flipped'], { cwd: root }),
    )
  }

  const app = join(work, 'app')
  let installed = false
  step('npm install of the packed tarballs and their peers', () => {
    installPacked(app, packed)
    installed = true
  })

  // a command, not a module: run it as `npx <name>` resolves it, from the installed tarball
  const binOnly = (manifest) => manifest.bin !== undefined && manifest.exports?.['.'] === undefined
  for (const { manifest } of packed.filter((p) => binOnly(p.manifest))) {
    step(`${manifest.name}: npx ${manifest.name} --version`, () => {
      const printed = run('npx', ['--no-install', manifest.name, '--version'], { cwd: app }).trim()
      if (printed !== manifest.version) throw new Error(`printed ${JSON.stringify(printed)}, expected ${manifest.version}`)
    })
  }

  for (const { manifest } of packed.filter((p) => !binOnly(p.manifest))) {
    const name = manifest.name
    const names = notAdapters.get(name) ?? ['PgLockError', 'LockTimeoutError', 'resolveLockId', 'withLock', 'tryWithLock', 'createLock']
    const probe = `const m = MODULE; for (const n of ${JSON.stringify(names)}) { if (!(n in m)) throw new Error('${name} lacks ' + n) }`
    step(`${name}: require()`, () => run('node', ['-e', probe.replace('MODULE', `require('${name}')`)], { cwd: app }))
    step(`${name}: import`, () =>
      run('node', ['--input-type=module', '-e', probe.replace('const m = MODULE;', `const m = await import('${name}');`)], { cwd: app }),
    )
  }

  if (installed) await checkTypes({ work, app, packed, step })
} finally {
  rmSync(work, { recursive: true, force: true })
}

if (failures > 0) {
  console.error(`check-packages: ${failures} check(s) failed`)
  process.exit(1)
}
console.log(
  `check-packages: ${dirs.length} package(s) packed, linted, installed, loaded from CJS and ESM, and compiled against by strict consumers`,
)

function step(label, action) {
  try {
    action()
    console.log(`  ok   ${label}`)
  } catch (error) {
    failures += 1
    console.error(`  FAIL ${label}\n${error.stdout ?? ''}${error.stderr ?? error.message}`)
  }
}
