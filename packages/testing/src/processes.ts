import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { Bench, SOAK, scaled } from './bench.ts'
import type { CycleWorkerOptions } from './cycle-worker.ts'

const WORKER = fileURLToPath(new URL('./cycle-worker.ts', import.meta.url))

/** OS processes per run: 3 under `pnpm test`, 8 under `pnpm test:soak`. */
export const PROCESSES = scaled(3, 8)
/** Lock cycles per process: 15 under `pnpm test`, 500 under `pnpm test:soak`. */
export const CYCLES = scaled(15, 500)

/** Runs one cycle worker (`cycle-worker.ts`) in an OS process of its own; resolves to its exit code. */
export function runWorker(options: CycleWorkerOptions): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = fork(WORKER, [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, PGLOCK_CYCLE_WORKER: JSON.stringify(options) },
      stdio: 'inherit',
    })
    child.on('error', reject)
    child.on('exit', (code) => resolve(code))
  })
}

/**
 * Processes at volume: several OS processes take one key over and over, for each scope and
 * mode. Exclusive runs increment a counter (no update may be lost). Shared runs mix shared
 * readers with exclusive writers (one cycle in four); each cycle records, inside the lock, the
 * server clock at entry and exit, and no writer's interval may overlap any other interval, while
 * a reader must never see the counter change under it. Ends with no lock and no backend left.
 *
 * @example
 * ```ts
 * import { describeProcesses } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeProcesses(adapter)
 * ```
 */
export function describeProcesses(adapter: AdapterUnderTest): void {
  describe(`${adapter.name}: processes at volume`, () => {
    const bench = new Bench(adapter, 'processes').install()

    for (const scope of ['session', 'transaction'] as const) {
      for (const mode of ['exclusive', 'shared'] as const) {
        it(`${PROCESSES} processes x ${CYCLES} cycles on one key (${scope} scope, ${mode} mode)`, async () => {
          const suffix = randomBytes(4).toString('hex')
          const counter = `pglock_counter_${suffix}`
          const intervals = `pglock_intervals_${suffix}`
          const key = bench.key(`processes-${scope}-${mode}`)
          const applicationName = bench.applicationName()
          await bench.observer.query(`CREATE TABLE ${counter} (id int PRIMARY KEY, value int NOT NULL)`)
          await bench.observer.query(`INSERT INTO ${counter} VALUES (1, 0)`)
          await bench.observer.query(
            `CREATE TABLE ${intervals} (id serial PRIMARY KEY, worker int NOT NULL, writer boolean NOT NULL,
               started timestamptz NOT NULL, ended timestamptz, stable boolean)`,
          )
          try {
            const started = performance.now()
            const codes = await Promise.all(
              Array.from({ length: PROCESSES }, (_, worker) =>
                runWorker({
                  url: bench.url,
                  adapter: adapter.module,
                  applicationName,
                  key,
                  counter,
                  intervals,
                  worker,
                  cycles: CYCLES,
                  scope,
                  mode,
                }),
              ),
            )
            const seconds = ((performance.now() - started) / 1000).toFixed(1)
            expect(codes).toEqual(Array(PROCESSES).fill(0))
            const [totals] = await bench.observer.query<{ cycles: string; writes: string; open: string; unstable: string }>(
              `SELECT count(*) AS cycles, count(*) FILTER (WHERE writer) AS writes,
                      count(*) FILTER (WHERE ended IS NULL) AS open, count(*) FILTER (WHERE NOT stable) AS unstable
                 FROM ${intervals}`,
            )
            const [value] = await bench.observer.query<{ value: number }>(`SELECT value FROM ${counter} WHERE id = 1`)
            const [overlaps] = await bench.observer.query<{ exclusive: string; shared: string }>(
              `SELECT count(*) FILTER (WHERE a.writer OR b.writer) AS exclusive, count(*) FILTER (WHERE NOT a.writer AND NOT b.writer) AS shared
                 FROM ${intervals} a JOIN ${intervals} b ON a.id < b.id AND a.started < b.ended AND b.started < a.ended`,
            )
            console.log(
              `processes ${adapter.name} ${scope}/${mode}: ${PROCESSES} x ${CYCLES} cycles in ${seconds} s, ${totals?.writes} writes,` +
                ` counter ${value?.value}, overlapping writer intervals ${overlaps?.exclusive}, overlapping reader intervals ${overlaps?.shared}`,
            )
            expect(Number(totals?.cycles)).toBe(PROCESSES * CYCLES)
            expect(Number(totals?.open)).toBe(0)
            expect(value?.value, 'no increment lost').toBe(Number(totals?.writes))
            expect(Number(overlaps?.exclusive), 'no exclusive holder overlapped another holder').toBe(0)
            expect(Number(totals?.unstable), 'no reader saw the counter change under its shared lock').toBe(0)
            if (SOAK && mode === 'shared') expect(Number(overlaps?.shared), 'shared readers held the lock together').toBeGreaterThan(0)
            await bench.expectClean(applicationName)
          } finally {
            await bench.observer.query(`DROP TABLE ${counter}, ${intervals}`)
          }
        }, 900_000)
      }
    }
  })
}
