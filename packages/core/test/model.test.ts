import { describe, expect, it } from 'vitest'
import { assertModel, type ModelWorld } from '../../testing/src/lock-model.ts'
import type { MemoryClient } from '../../testing/src/memory-postgres.ts'
import { createLock, locksOf, MemoryPostgres, settle, tryWithLock, withLock } from './memory.ts'

/** Sequences: a thousand in seconds under `pnpm test`, more under `pnpm test:soak`. */
const RUNS = process.env.PGLOCK_SOAK === '1' ? 20_000 : 1_000

describe('lock state machine against a model, on the in-memory Postgres', () => {
  it(
    `matches the model over ${RUNS} random command sequences`,
    async () => {
      const options = { singleConnection: true, kill: true, maxCommands: 30, numRuns: RUNS }
      const commands = await assertModel(options, async (check) => {
        const server = new MemoryPostgres()
        const pools = { A: server.pool({ max: 4 }), B: server.pool({ max: 3, prepared: false }) }
        let connection = server.connect()
        const world: ModelWorld = {
          // the model is typed against the built core, whose Lock is nominally another class
          lib: { createLock, withLock, tryWithLock } as unknown as ModelWorld['lib'],
          keys: [1, 2],
          waitMs: 2,
          db: (via) => (via === 'C' ? connection : pools[via]),
          pidOf: async (db) => (db as MemoryClient).pid,
          locks: async (key) => locksOf(server, key),
          async terminate(pid) {
            server.terminate(pid)
            await settle()
          },
          async reopenConnection() {
            connection = server.connect()
          },
          pause: settle,
        }
        await check(world)
        expect(server.locks(), 'locks left after every handle released').toEqual([])
        expect([pools.A.checkedOut, pools.B.checkedOut], 'connections left checked out').toEqual([0, 0])
      })
      expect(commands).toBeGreaterThan(RUNS)
      console.log(`in-memory model: ${RUNS} runs, ${commands} commands checked against pg_locks`)
    },
    RUNS * 20,
  )
})
