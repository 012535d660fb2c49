import type { TestProject } from 'vitest/node'
import { resolveTestDatabase } from './database.ts'
import { type PgBouncerRuntime, resolvePgBouncer } from './pgbouncer.ts'
import type {} from './provided-context.ts'

/**
 * Vitest global setup: resolves, once for the whole run, the database every test file uses and the
 * way the PgBouncer suites start pgbouncer, and hands both to the test files (`inject`).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const database = await resolveTestDatabase()
  console.log(`pglock tests: using ${database.source} Postgres`)
  project.provide('databaseUrl', database.url)
  const pgbouncer = await resolvePgBouncer({ say: (line) => console.log(line) })
  if (pgbouncer.kind === 'unavailable') console.error(`pglock tests: the PgBouncer suites will fail: ${pgbouncer.reason}`)
  else console.log(`pglock tests: using ${describeRuntime(pgbouncer)}`)
  project.provide('pgbouncer', pgbouncer)
  return () => database.stop()
}

function describeRuntime(pgbouncer: Exclude<PgBouncerRuntime, { kind: 'unavailable' }>): string {
  if (pgbouncer.kind === 'container') return `pgbouncer in a container (${pgbouncer.image})`
  return `${pgbouncer.version} at ${pgbouncer.path}${pgbouncer.source === 'apt-get' ? ', just installed with apt-get' : ''}`
}
