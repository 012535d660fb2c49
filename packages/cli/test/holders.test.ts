import { join } from 'node:path'
import { resolveLockId } from '@pglock/pg'
import pg from 'pg'
import { describe, expect, inject, it } from 'vitest'
import { advisoryRows, lockId, observer, pglock, readLines, scratch, start, uniqueKey, until } from './pglock.ts'

const db = observer()
const dir = scratch()

describe('pglock holders', () => {
  it('shows the holder in another process and a waiter, with their pids, as JSON', async () => {
    const key = uniqueKey('holders')
    const log = join(dir(), 'log')
    const holder = start(['run', key, '--', 'sh', '-c', `echo ready >> '${log}'; exec sleep 30`])
    const waiter = new pg.Client({ connectionString: inject('databaseUrl'), application_name: 'pglock-cli-test-waiter' })
    waiter.on('error', () => undefined)
    await waiter.connect()
    try {
      await until('the command to start', () => readLines(log).includes('ready'))
      const [held] = await advisoryRows(db(), key)
      const waiting = waiter.query('SELECT pg_advisory_lock($1::bigint)', [lockId(key)])
      await until('the waiter to queue', async () => (await advisoryRows(db(), key)).length === 2)
      const waiterPid = (await advisoryRows(db(), key)).find((row) => !row.granted)?.pid

      const result = await pglock(['holders', '--key', key, '--json'])
      expect(result).toMatchObject({ code: 0, stderr: '' })
      expect(JSON.parse(result.stdout)).toEqual([
        expect.objectContaining({
          lockId: lockId(key),
          key,
          mode: 'exclusive',
          granted: true,
          waitingSince: null,
          pid: held?.pid,
          applicationName: `pglock run ${key}`.slice(0, 63),
        }),
        expect.objectContaining({
          key,
          granted: false,
          waitingSince: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
          pid: waiterPid,
          applicationName: 'pglock-cli-test-waiter',
          state: 'active',
        }),
      ])

      const table = (await pglock(['holders', '-k', key])).stdout.split('\n')
      expect(table[0]).toMatch(/^LOCK ID +KEY +MODE +STATUS +PID +APPLICATION +CLIENT +STATE +BACKEND START$/)
      expect(table[1]).toMatch(new RegExp(`^${lockId(key)} +${key} +exclusive +holds +${held?.pid} `))
      expect(table[2]).toMatch(new RegExp(`^${lockId(key)} +${key} +exclusive +waits \\S+ +${waiterPid} +pglock-cli-test-waiter `))

      holder.process.kill('SIGTERM')
      await waiting
    } finally {
      await waiter.end()
    }
  })

  it('matches a key under every --key-hash given', async () => {
    const key = uniqueKey('holders-hash')
    const legacy = String((resolveLockId(key, { keyHash: 'postgres-lock-0.1' }) as { value: bigint }).value)
    await db().query('SELECT pg_advisory_lock($1::bigint)', [legacy])
    try {
      expect(JSON.parse((await pglock(['holders', '--key', key, '--json'])).stdout)).toEqual([])
      const both = await pglock(['holders', '--key', key, '--key-hash', 'sha1-int64', '--key-hash', 'postgres-lock-0.1', '--json'])
      expect(JSON.parse(both.stdout)).toEqual([expect.objectContaining({ lockId: legacy, key, granted: true })])
    } finally {
      await db().query('SELECT pg_advisory_unlock($1::bigint)', [legacy])
    }
  })

  it('says that nobody holds or awaits the keys, while another advisory lock is held', async () => {
    const [nobody, neither, other] = [uniqueKey('nobody'), uniqueKey('neither'), uniqueKey('other')]
    await db().query('SELECT pg_advisory_lock($1::bigint)', [lockId(other)])
    try {
      expect(await pglock(['holders', '--key', nobody])).toMatchObject({
        code: 0,
        stdout: `no advisory lock is held or awaited for "${nobody}"\n`,
      })
      expect((await pglock(['holders', '-k', nobody, '-k', neither])).stdout).toBe(
        `no advisory lock is held or awaited for "${nobody}", "${neither}"\n`,
      )
      expect((await pglock(['holders'])).stdout).toContain(lockId(other))
    } finally {
      await db().query('SELECT pg_advisory_unlock($1::bigint)', [lockId(other)])
    }
  })

  it('exits 69 when Postgres cannot be reached', async () => {
    const result = await pglock(['holders'], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' })
    expect(result.code).toBe(69)
    expect(result.stderr).toMatch(/^pglock: cannot connect to Postgres: /)
  })
})
