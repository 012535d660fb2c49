import { describe, it } from 'vitest'
import type { AdapterUnderTest } from './adapter.ts'
import { Bench, type BenchHandle, scaled } from './bench.ts'
import { assertModel, type ModelWorld } from './lock-model.ts'

/** Property runs: a few under `pnpm test` (seconds), many under `pnpm test:soak`. */
export const MODEL_RUNS = scaled(10, 200)
const MAX_COMMANDS = scaled(30, 50)
const WAIT_MS = 30

/**
 * Model-based property test of the lock state machine against a real database: fast-check
 * generates sequences of `tryAcquire`, `acquire`, `acquire` with a timeout, `acquire` aborted
 * mid-wait or already aborted, `release`, and killing a holder's backend (`pg_terminate_backend`),
 * across nine handles on two keys, spread over two pools and one single connection, in both
 * modes. After every command each handle's `isHeld` and the observer's `pg_locks` rows must match
 * a simple model (see `lock-model.ts`, which the core's in-memory model test shares).
 *
 * @example
 * ```ts
 * import { describeModel } from '@pglock/testing'
 * import adapter from './adapter.ts'
 *
 * describeModel(adapter)
 * ```
 */
export function describeModel(adapter: AdapterUnderTest): void {
  const { caps } = adapter
  describe(`${adapter.name}: lock state machine against a model`, () => {
    const bench = new Bench(adapter, 'model').install()

    it.skipIf(!caps.sessionOnPool)(
      `matches the model over ${MODEL_RUNS} random command sequences`,
      async () => {
        const pools = { A: await bench.open({ max: 4 }), B: await bench.open({ max: 3 }) }
        const options = {
          singleConnection: caps.singleConnection,
          kill: caps.survivesConnectionLoss,
          maxCommands: MAX_COMMANDS,
          numRuns: MODEL_RUNS,
        }
        const commands = await assertModel(options, async (check) => {
          const keys = [bench.key('model-0'), bench.key('model-1')] as const
          let connection: BenchHandle | undefined = caps.singleConnection ? await bench.open({ kind: 'connection' }) : undefined
          const world: ModelWorld = {
            lib: adapter.lib,
            keys,
            waitMs: WAIT_MS,
            db: (via) => (via === 'C' ? connection?.db : pools[via].db),
            pidOf: async (db) => Number((await adapter.query(db, 'SELECT pg_backend_pid() AS pid'))[0]?.pid),
            locks: (key) => bench.observer.locks(key),
            async terminate(pid) {
              await bench.observer.terminate(pid)
              await bench.observer.until(`backend ${pid} is gone`, async () => {
                for (const key of keys) if ((await bench.observer.holders(key)).includes(pid)) return false
                return true
              })
            },
            async reopenConnection() {
              const dead = connection
              connection = await bench.open({ kind: 'connection' })
              await dead?.close().catch(() => undefined)
            },
            pause: () => new Promise((resolve) => setTimeout(resolve, WAIT_MS)),
          }
          try {
            await check(world)
          } finally {
            await connection?.close()
            for (const key of keys) {
              await bench.observer.until(`key ${key} is free between runs`, async () => (await bench.observer.locks(key)).length === 0)
            }
          }
        })
        console.log(`model ${adapter.name}: ${MODEL_RUNS} runs, ${commands} commands checked against pg_locks`)
        await bench.expectAllConnectionsUsable(pools.A)
        await bench.expectAllConnectionsUsable(pools.B)
      },
      1_800_000,
    )
  })
}
