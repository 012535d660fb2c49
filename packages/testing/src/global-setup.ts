import type { TestProject } from 'vitest/node'
import { resolveTestDatabase } from './database.ts'
import type {} from './provided-context.ts'

/** Vitest global setup: resolves one database for the whole run and hands its URL to every test file. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const database = await resolveTestDatabase()
  console.log(`pglock tests: using ${database.source} Postgres`)
  project.provide('databaseUrl', database.url)
  return () => database.stop()
}
