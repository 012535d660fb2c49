import { existsSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

/** The drivers whose versions a cell records, the workspace packages that load them, and what the query builders load beneath. */
const DRIVERS = ['pg', 'postgres', 'drizzle-orm', 'kysely', 'kysely-postgres-js']
const UNDERNEATH: Record<string, readonly string[]> = { 'drizzle-orm': ['pg', 'postgres'], 'kysely-postgres-js': ['postgres', 'kysely'] }
const IMPORTERS = ['packages/pg', 'packages/postgres-js', 'packages/drizzle', 'packages/kysely', 'packages/testing']

/**
 * Vitest global setup of a matrix cell: records, from inside the test process, the Node that runs
 * it, the Postgres server it talks to, and the version of each driver as each workspace package
 * resolves it (and as drizzle-orm and kysely-postgres-js resolve theirs), into the JSON file named
 * by `PGLOCK_MATRIX_PROBE`. The matrix compares that record with what the cell claims.
 *
 * @example
 * ```ts
 * // scripts/matrix/vitest.config.ts
 * globalSetup: ['packages/testing/src/global-setup.ts', 'scripts/matrix/probe.ts']
 * ```
 */
export default async function probe(): Promise<void> {
  const root = process.cwd()
  const loaded: Record<string, Record<string, string>> = {}
  for (const importer of IMPORTERS) {
    const versions = versionsFrom(join(root, importer, 'package.json'), DRIVERS)
    loaded[importer] = versions
    for (const [builder, drivers] of Object.entries(UNDERNEATH)) {
      const version = versions[builder]
      const dir = version && packageDir(join(root, importer), builder)
      if (dir) loaded[`${builder}@${version}`] = versionsFrom(join(dir, 'package.json'), drivers)
    }
  }
  const server = await serverVersion(root)
  const record = { node: process.version, execPath: process.execPath, server, loaded }
  // biome-ignore lint/suspicious/noUndeclaredEnvVars: set per cell by scripts/matrix/run.mjs, not a turbo input
  const file = process.env.PGLOCK_MATRIX_PROBE
  if (file) writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`)
  const summary = Object.entries(loaded)
    .map(
      ([from, versions]) =>
        `${from}: ${Object.entries(versions)
          .map(([driver, version]) => `${driver} ${version}`)
          .join(', ')}`,
    )
    .join('; ')
  console.log(`matrix probe: node ${process.version}, Postgres ${server}; ${summary}`)
}

/** `require('<driver>/package.json').version` as seen from `from`, for each of `drivers` it can reach. */
function versionsFrom(from: string, drivers: readonly string[]): Record<string, string> {
  const require = createRequire(from)
  const versions: Record<string, string> = {}
  for (const driver of drivers) {
    const manifest = manifestOf(require, dirname(from), driver)
    if (manifest) versions[driver] = manifest.version
  }
  return versions
}

/** A driver's package.json; postgres.js does not export it, so its directory is found by Node's lookup instead. */
function manifestOf(require: NodeJS.Require, from: string, driver: string): { version: string } | undefined {
  try {
    return require(`${driver}/package.json`)
  } catch {
    const dir = packageDir(from, driver)
    return dir ? JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) : undefined
  }
}

function packageDir(from: string, name: string): string | undefined {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name)
    if (existsSync(join(candidate, 'package.json'))) return realpathSync(candidate)
    if (dirname(dir) === dir) return undefined
  }
}

async function serverVersion(root: string): Promise<string> {
  // biome-ignore lint/suspicious/noUndeclaredEnvVars: set per cell by scripts/matrix/run.mjs, not a turbo input
  const url = process.env.PGLOCK_TEST_DATABASE_URL
  if (!url) return 'unknown (PGLOCK_TEST_DATABASE_URL unset)'
  const pg = createRequire(join(root, 'packages/testing/package.json'))('pg')
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query('SHOW server_version')).rows[0].server_version
  } finally {
    await client.end()
  }
}
