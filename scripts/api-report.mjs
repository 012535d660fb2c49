#!/usr/bin/env node
/**
 * The public surface of every published package, pinned in review: API Extractor renders the
 * built declarations of each `exports` entry into `packages/<pkg>/api/<entry>.api.md` (`.` is
 * `index`), and this check fails when one differs from the checked-in report, when a report has
 * no entry, or when an adapter's user entry lacks one of the core's error classes.
 *
 * Usage: node scripts/api-report.mjs [--update]   (reads dist: `pnpm api:update` builds first)
 *   --update   rewrites the reports (and deletes those of entries that are gone)
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join, relative } from 'node:path'
import { pathToFileURL } from 'node:url'
import apiExtractor from '@microsoft/api-extractor'
import { notAdapters, publicPackages, root } from './pack.mjs'

const { Extractor, ExtractorConfig } = apiExtractor
const update = process.argv.includes('--update')
const temp = mkdtempSync(join(tmpdir(), 'pglock-api-'))
const failures = []

try {
  for (const dir of publicPackages()) {
    const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    const reports = join(dir, 'api')
    const expected = new Set()
    if (update) mkdirSync(reports, { recursive: true })
    for (const [entry, types] of entries(manifest)) {
      const name = entry === '.' ? 'index' : entry.slice(2).replaceAll('/', '-')
      expected.add(`${name}.api.md`)
      report(dir, manifest, entry, types, name, reports)
    }
    const present = existsSync(reports) ? readdirSync(reports, { withFileTypes: true }).filter((f) => f.isFile()) : []
    for (const file of present) {
      if (expected.has(file.name)) continue
      if (update) {
        rmSync(join(reports, file.name))
        console.log(`  deleted ${relative(root, join(reports, file.name))}: no such entry in ${manifest.name}'s exports`)
      } else failures.push(`${relative(root, join(reports, file.name))} reports no entry of ${manifest.name}'s exports`)
    }
  }
  await checkErrorsReexported()
} finally {
  rmSync(temp, { recursive: true, force: true })
}

if (failures.length > 0) {
  console.error(`api-report: ${failures.length} problem(s):\n${failures.map((f) => `  - ${f}`).join('\n')}`)
  if (!update) console.error('If the change to the public API is intended, run `pnpm api:update` and commit the reports.')
  process.exit(1)
}
console.log(`api-report: ${update ? 'reports written' : 'every public entry matches its report'}`)

/** `[entry, declaration file]` for each subpath of `exports` that has types (not `./package.json`). */
function entries(manifest) {
  return Object.entries(manifest.exports ?? {})
    .map(([entry, target]) => [entry, target?.import?.types ?? target?.types])
    .filter(([, types]) => typeof types === 'string')
}

function report(dir, manifest, entry, types, name, reportFolder) {
  const label = `${manifest.name}${entry === '.' ? '' : entry.slice(1)}`
  const config = ExtractorConfig.prepare({
    configObject: {
      projectFolder: dir,
      mainEntryPointFilePath: join(dir, types),
      compiler: {
        overrideTsconfig: {
          compilerOptions: {
            target: 'es2022',
            lib: ['es2022', 'esnext.disposable'],
            module: 'nodenext',
            moduleResolution: 'nodenext',
            strict: true,
            types: ['node'],
          },
          files: [join(dir, types)],
        },
        // drizzle-orm's declarations fail a full check; check-types.mjs checks ours in full.
        skipLibCheck: true,
      },
      apiReport: {
        enabled: true,
        reportFileName: name,
        reportFolder,
        reportTempFolder: join(temp, basename(dir)),
      },
      docModel: { enabled: false },
      dtsRollup: { enabled: false },
      tsdocMetadata: { enabled: false },
      newlineKind: 'lf',
      messages: {
        compilerMessageReporting: { default: { logLevel: 'warning' } },
        extractorMessageReporting: {
          default: { logLevel: 'warning' },
          // No release tags: every export is public.
          'ae-missing-release-tag': { logLevel: 'none' },
          // Shown in the report for review, not failed: a type users meet but cannot name, an
          // `@internal` declaration in a public signature, a doc link to what is not exported.
          'ae-forgotten-export': { logLevel: 'none', addToApiReportFile: true },
          'ae-incompatible-release-tags': { logLevel: 'none', addToApiReportFile: true },
          'ae-internal-missing-underscore': { logLevel: 'none', addToApiReportFile: true },
          'ae-unresolved-link': { logLevel: 'none', addToApiReportFile: true },
          'ae-undocumented': { logLevel: 'none' },
          'ae-wrong-input-file-type': { logLevel: 'error' },
        },
        tsdocMessageReporting: { default: { logLevel: 'none' } },
      },
    },
    configObjectFullPath: undefined,
    packageJsonFullPath: join(dir, 'package.json'),
  })
  const messages = []
  const result = quietly(() =>
    Extractor.invoke(config, {
      localBuild: update,
      messageCallback: (message) => {
        const reportChanged = message.messageId === 'console-api-report-copied' || message.messageId === 'console-api-report-not-copied'
        if (!reportChanged && (message.logLevel === 'error' || message.logLevel === 'warning')) {
          messages.push(message.formatMessageWithLocation(dir))
        }
        message.handled = true
      },
    }),
  )
  const file = relative(root, join(reportFolder, `${name}.api.md`))
  console.log(`  ${result.apiReportChanged ? (update ? 'updated' : 'CHANGED') : 'ok     '} ${label} -> ${file}`)
  for (const message of messages) failures.push(`${label}: ${message}`)
  if (result.apiReportChanged && !update) {
    failures.push(`${label}: the public API differs from ${file}`)
    showDiff(join(reportFolder, `${name}.api.md`), join(temp, basename(dir), `${name}.api.md`))
  } else if (!result.succeeded && messages.length === 0) failures.push(`${label}: API Extractor failed`)
}

/** Prints how the built API differs from the checked-in report, as CI logs should show it. */
function showDiff(checkedIn, built) {
  const args = ['diff', '--no-index', '--no-color', '--', existsSync(checkedIn) ? checkedIn : '/dev/null', built]
  const { stdout } = spawnSync('git', args, { encoding: 'utf8' })
  console.log(stdout.replace(/^(?:diff|index|---|\+\+\+) .*\n/gm, ''))
}

/** Runs `action` without API Extractor's console notice that skipLibCheck is on. */
function quietly(action) {
  const log = console.log
  console.log = (...args) => {
    if (!String(args[0]).includes('invoked with skipLibCheck')) log(...args)
  }
  try {
    return action()
  } finally {
    console.log = log
  }
}

/**
 * Users import errors from their adapter, so each adapter's user entries must re-export every
 * error class of the core; an error added to the core would otherwise leave the adapters' reports
 * unchanged.
 */
async function checkErrorsReexported() {
  const dirs = publicPackages()
  const coreDir = dirs.find((dir) => basename(dir) === 'core')
  const coreManifest = JSON.parse(readFileSync(join(coreDir, 'package.json'), 'utf8'))
  const core = await import(pathToFileURL(join(coreDir, coreManifest.exports['.'].import.default)).href)
  const errors = Object.entries(core).filter(
    ([, value]) => value === core.PgLockError || (typeof value === 'function' && value.prototype instanceof core.PgLockError),
  )
  for (const dir of dirs.filter((d) => d !== coreDir)) {
    const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
    if (notAdapters.has(manifest.name)) continue
    for (const [entry, target] of Object.entries(manifest.exports)) {
      if (entry === './package.json' || entry === './adapter') continue
      const loaded = await import(pathToFileURL(join(dir, target.import.default)).href)
      const missing = errors.filter(([name, value]) => loaded[name] !== value).map(([name]) => name)
      if (missing.length > 0) failures.push(`${manifest.name}${entry.slice(1)} does not re-export ${missing.join(', ')} from @pglock/core`)
    }
  }
}
