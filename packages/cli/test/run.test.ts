import { type AddressInfo, createServer, type Socket } from 'node:net'
import { join } from 'node:path'
import { describe, expect, inject, it } from 'vitest'
import { advisoryRows, lockId, observer, pglock, readLines, scratch, start, uniqueKey, until } from './pglock.ts'

const db = observer()
const dir = scratch()

/** A shell command that appends `line` to `file`. */
const append = (file: string, line: string) => `echo "${line}" >> '${file}'`

describe('pglock run: mutual exclusion', () => {
  it('never lets 3 concurrent runs of the same key overlap', async () => {
    const key = uniqueKey('overlap')
    const log = join(dir(), 'log')
    const script = `${append(log, 'start $$')}; sleep 0.3; ${append(log, 'end $$')}`
    const results = await Promise.all([1, 2, 3].map(() => pglock(['run', key, '--', 'sh', '-c', script])))
    expect(results.map((r) => [r.code, r.stderr])).toEqual([
      [0, ''],
      [0, ''],
      [0, ''],
    ])
    const lines = readLines(log)
    expect(lines).toHaveLength(6)
    for (let i = 0; i < lines.length; i += 2) {
      const pid = lines[i]?.replace('start ', '')
      expect([lines[i], lines[i + 1]]).toEqual([`start ${pid}`, `end ${pid}`])
    }
    expect(await advisoryRows(db(), key)).toEqual([])
  })

  it('lets shared runs hold the key together and keeps an exclusive run out', async () => {
    const key = uniqueKey('shared')
    await db().query('SELECT pg_advisory_lock_shared($1::bigint)', [lockId(key)])
    try {
      expect((await pglock(['run', '--shared', '--try', key, '--', 'true'])).code).toBe(0)
      expect((await pglock(['run', '--try', '--quiet', key, '--', 'true'])).code).toBe(75)
    } finally {
      await db().query('SELECT pg_advisory_unlock_shared($1::bigint)', [lockId(key)])
    }
  })
})

describe('pglock run: when the lock is not free', () => {
  it('--try exits 75 at once, without running the command, while another process holds the key', async () => {
    const key = uniqueKey('try')
    const marker = join(dir(), 'ran')
    await db().query('SELECT pg_advisory_lock($1::bigint)', [lockId(key)])
    try {
      const result = await pglock(['run', '--try', key, '--', 'sh', '-c', append(marker, 'ran')])
      expect(result.code).toBe(75)
      expect(result.stderr).toBe(`pglock: lock "${key}" is held by another session\n`)
      expect(readLines(marker)).toEqual([])
      // "at once": no wait for the lock, only a process start and a connection on a busy machine
      expect(result.ms).toBeLessThan(10_000)
    } finally {
      await db().query('SELECT pg_advisory_unlock($1::bigint)', [lockId(key)])
    }
  })

  it('--timeout exits 124 once its time has passed, without running the command', async () => {
    const key = uniqueKey('timeout')
    const marker = join(dir(), 'ran')
    await db().query('SELECT pg_advisory_lock($1::bigint)', [lockId(key)])
    try {
      const result = await pglock(['run', '--timeout', '1s', key, '--', 'sh', '-c', append(marker, 'ran')])
      expect(result.code).toBe(124)
      expect(result.stderr).toBe(`pglock: timed out after 1s waiting for the lock "${key}"\n`)
      expect(readLines(marker)).toEqual([])
      expect(result.ms).toBeGreaterThanOrEqual(1_000)
      expect(result.ms).toBeLessThan(15_000)
      expect(await advisoryRows(db(), key)).toEqual([
        expect.objectContaining({ granted: true, applicationName: 'pglock-cli-test-observer' }),
      ])
    } finally {
      await db().query('SELECT pg_advisory_unlock($1::bigint)', [lockId(key)])
    }
  })

  it('says nothing with --quiet, and the exit code still tells busy from timed out', async () => {
    const key = uniqueKey('quiet')
    await db().query('SELECT pg_advisory_lock($1::bigint)', [lockId(key)])
    try {
      expect(await pglock(['run', '--try', '--quiet', key, '--', 'true'])).toMatchObject({ code: 75, stdout: '', stderr: '' })
      expect(await pglock(['run', '-q', '-t', '200ms', key, '--', 'true'])).toMatchObject({ code: 124, stdout: '', stderr: '' })
    } finally {
      await db().query('SELECT pg_advisory_unlock($1::bigint)', [lockId(key)])
    }
  })

  it("--timeout 0 tries once, as the library's timeoutMs: 0: runs the command when free, exits 124 when busy", async () => {
    const key = uniqueKey('timeout-0')
    const marker = join(dir(), 'ran')
    // connecting takes longer than 0 (or 1) ms: the try is made once the connection is up
    expect(await pglock(['run', '--timeout', '0', key, '--', 'sh', '-c', append(marker, 'ran')])).toMatchObject({ code: 0, stderr: '' })
    expect(readLines(marker)).toEqual(['ran'])
    await db().query('SELECT pg_advisory_lock($1::bigint)', [lockId(key)])
    try {
      const result = await pglock(['run', '--timeout', '0', key, '--', 'sh', '-c', append(marker, 'ran again')])
      expect([result.code, result.stderr]).toEqual([124, `pglock: lock "${key}" is held by another session (--timeout 0 tries once)\n`])
      expect(readLines(marker)).toEqual(['ran'])
    } finally {
      await db().query('SELECT pg_advisory_unlock($1::bigint)', [lockId(key)])
    }
  })

  it('runs the command as soon as the holder releases, within --timeout', async () => {
    const key = uniqueKey('handover')
    await db().query('SELECT pg_advisory_lock($1::bigint)', [lockId(key)])
    const waiting = start(['run', '--timeout', '20s', key, '--', 'true'])
    await until('pglock to wait for the lock', async () => (await advisoryRows(db(), key)).some((row) => !row.granted))
    await db().query('SELECT pg_advisory_unlock($1::bigint)', [lockId(key)])
    expect((await waiting.done).code).toBe(0)
  })
})

describe('pglock run: signals', () => {
  it('passes SIGTERM to the command, exits with its code, and leaves no lock in pg_locks', async () => {
    const key = uniqueKey('sigterm')
    const log = join(dir(), 'log')
    const script = `trap '${append(log, 'TERM')}; exit 7' TERM; ${append(log, 'ready')}; while :; do sleep 0.05; done`
    const running = start(['run', key, '--', 'sh', '-c', script])
    await until('the command to start', () => readLines(log).includes('ready'))
    expect(await advisoryRows(db(), key)).toEqual([
      expect.objectContaining({ granted: true, mode: 'ExclusiveLock', applicationName: `pglock run ${key}`.slice(0, 63) }),
    ])
    running.process.kill('SIGTERM')
    const result = await running.done
    expect(readLines(log)).toEqual(['ready', 'TERM'])
    expect(result.code).toBe(7)
    expect(await advisoryRows(db(), key)).toEqual([])
  })

  it('exits 128+N when signal N kills the command', async () => {
    const key = uniqueKey('killed')
    const log = join(dir(), 'log')
    const running = start(['run', key, '--', 'sh', '-c', `${append(log, 'ready')}; exec sleep 30`])
    await until('the command to start', () => readLines(log).includes('ready'))
    running.process.kill('SIGINT')
    expect((await running.done).code).toBe(130)
    expect(await advisoryRows(db(), key)).toEqual([])
  })

  it('stops waiting on SIGINT before the command starts: exit 130, no lock, no command', async () => {
    const key = uniqueKey('sigint-wait')
    const marker = join(dir(), 'ran')
    await db().query('SELECT pg_advisory_lock($1::bigint)', [lockId(key)])
    try {
      const waiting = start(['run', key, '--', 'sh', '-c', append(marker, 'ran')])
      await until('pglock to wait for the lock', async () => (await advisoryRows(db(), key)).some((row) => !row.granted))
      waiting.process.kill('SIGINT')
      const result = await waiting.done
      expect(result.code).toBe(130)
      expect(readLines(marker)).toEqual([])
      expect(await advisoryRows(db(), key)).toEqual([
        expect.objectContaining({ granted: true, applicationName: 'pglock-cli-test-observer' }),
      ])
    } finally {
      await db().query('SELECT pg_advisory_unlock($1::bigint)', [lockId(key)])
    }
  })
})

describe('pglock run: a lost lock', () => {
  it('terminates the command and exits 74 when the holding backend is terminated', async () => {
    const key = uniqueKey('lost')
    const log = join(dir(), 'log')
    const script = `trap '${append(log, 'TERM')}; exit 0' TERM; ${append(log, 'ready')}; while :; do sleep 0.05; done`
    const running = start(['run', '--keep-alive', '1s', key, '--', 'sh', '-c', script])
    await until('the command to start', () => readLines(log).includes('ready'))
    const [holder] = await advisoryRows(db(), key)
    await db().query('SELECT pg_terminate_backend($1)', [holder?.pid])
    const result = await running.done
    expect(result.code).toBe(74)
    expect(result.stderr).toMatch(new RegExp(`^pglock: lock "${key}" was lost: .*; terminating the command\\n$`))
    expect(readLines(log)).toEqual(['ready', 'TERM'])
  })

  it('kills a command that ignores SIGTERM once --kill-after has passed', async () => {
    const key = uniqueKey('lost-kill')
    const log = join(dir(), 'log')
    const script = `trap '${append(log, 'TERM ignored')}' TERM; ${append(log, 'ready')}; while :; do sleep 0.05; done`
    const running = start(['run', '--kill-after', '500ms', key, '--', 'sh', '-c', script])
    await until('the command to start', () => readLines(log).includes('ready'))
    const [holder] = await advisoryRows(db(), key)
    await db().query('SELECT pg_terminate_backend($1)', [holder?.pid])
    const result = await running.done
    expect(result.code).toBe(74)
    expect(readLines(log)).toEqual(['ready', 'TERM ignored'])
  })
})

describe('pglock run: exit codes', () => {
  it.each([
    ['exit 0', 0],
    ['exit 3', 3],
    ['exit 255', 255],
    ['kill -KILL $$', 137],
    ['kill -TERM $$', 143],
  ])('passes `%s` through as %i', async (script, code) => {
    expect((await pglock(['run', uniqueKey('code'), '--', 'sh', '-c', script])).code).toBe(code)
  })

  it('exits 127 for a command that does not exist, and releases the lock', async () => {
    const key = uniqueKey('missing')
    const result = await pglock(['run', key, '--', 'pglock-no-such-command'])
    expect([result.code, result.stderr]).toEqual([127, 'pglock: pglock-no-such-command: command not found\n'])
    expect(await advisoryRows(db(), key)).toEqual([])
  })

  it('exits 126 for a command that cannot be run', async () => {
    const result = await pglock(['run', uniqueKey('noexec'), '--', dir()])
    expect(result.code).toBe(126)
  })
})

describe('pglock run: the connection', () => {
  const url = new URL(inject('databaseUrl'))

  it('exits 69 with the reason when Postgres cannot be reached', async () => {
    const result = await pglock(['run', '--url', 'postgres://nobody@127.0.0.1:1/none', uniqueKey('unreachable'), '--', 'true'])
    expect(result.code).toBe(69)
    expect(result.stderr).toMatch(/^pglock: cannot connect to Postgres: .*ECONNREFUSED/)
  })

  it('exits 124, not 69, when --timeout runs out while still connecting', async () => {
    // a server that accepts the connection and never answers the startup message
    const sockets = new Set<Socket>()
    const silent = createServer((socket) => void sockets.add(socket))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    try {
      const { port } = silent.address() as AddressInfo
      const result = await pglock([
        'run',
        '--timeout',
        '300ms',
        '--url',
        `postgres://nobody@127.0.0.1:${port}/none`,
        uniqueKey('slow'),
        '--',
        'true',
      ])
      expect([result.code, result.stderr]).toEqual([124, 'pglock: timed out after 300ms while connecting to Postgres\n'])
      expect(result.ms).toBeGreaterThanOrEqual(300)
    } finally {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => silent.close(resolve))
    }
  })

  it('prefers --url to DATABASE_URL', async () => {
    const result = await pglock(['run', '--url', url.href, uniqueKey('url'), '--', 'true'], {
      DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none',
    })
    expect(result.code).toBe(0)
  })

  it('reads DATABASE_URL', async () => {
    const result = await pglock(['run', uniqueKey('env-url'), '--', 'true'], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' })
    expect(result.code).toBe(69)
  })

  it('falls back to the PG* variables without DATABASE_URL', async () => {
    const env = {
      DATABASE_URL: undefined,
      PGHOST: url.hostname,
      PGPORT: url.port || '5432',
      PGUSER: decodeURIComponent(url.username),
      PGPASSWORD: decodeURIComponent(url.password),
      PGDATABASE: url.pathname.slice(1),
    }
    expect((await pglock(['run', uniqueKey('pg-env'), '--', 'true'], env)).code).toBe(0)
    expect((await pglock(['run', uniqueKey('pg-env'), '--', 'true'], { ...env, PGPORT: '1' })).code).toBe(69)
  })
})
