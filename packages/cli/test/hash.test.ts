import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { pglock } from './pglock.ts'

const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }

describe('pglock hash', () => {
  it("prints the id Python postgresql-lock uses for a key ('shared-identifier' -> -464685171814670893)", async () => {
    expect(await pglock(['hash', 'shared-identifier'])).toMatchObject({ code: 0, stdout: '-464685171814670893\n', stderr: '' })
  })

  it('prints the id of Python postgres-lock 0.1.x with --key-hash postgres-lock-0.1 (-> 142468548502040132)', async () => {
    const result = await pglock(['hash', '--key-hash', 'postgres-lock-0.1', 'shared-identifier'])
    expect(result).toMatchObject({ code: 0, stdout: '142468548502040132\n' })
  })

  // expected ids computed with Python's hashlib: int.from_bytes(sha1(key.encode()).digest()[:8], 'big', signed=True)
  it('prints one line per key, and needs no database', async () => {
    const result = await pglock(['hash', 'shared-identifier', '', 'ключ'], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' })
    expect(result.code).toBe(0)
    expect(result.stdout.split('\n')).toEqual(['-464685171814670893', '-2721964255587120371', '-5518327800291478426', ''])
  })

  it('prints one JSON array, as holders --json does, with the pg_locks columns of each id', async () => {
    const result = await pglock(['hash', '--json', 'shared-identifier', 'ключ'])
    expect(result).toMatchObject({ code: 0, stderr: '' })
    expect(JSON.parse(result.stdout)).toEqual([
      {
        key: 'shared-identifier',
        keyHash: 'sha1-int64',
        lockId: '-464685171814670893',
        classid: 4186774348,
        objid: 1503157715,
        objsubid: 1,
      },
      expect.objectContaining({ key: 'ключ', lockId: '-5518327800291478426', objsubid: 1 }),
    ])
    expect(JSON.parse((await pglock(['hash', '--json', 'shared-identifier'])).stdout)).toHaveLength(1)
  })
})

describe('pglock: usage', () => {
  it.each([
    [['hash'], 'pglock: missing KEY\nTry "pglock hash --help".\n'],
    [
      ['hash', '--key-hash', 'md5', 'k'],
      'pglock: --key-hash must be sha1-int64 or postgres-lock-0.1, got "md5"\nTry "pglock hash --help".\n',
    ],
    [['hash', '--jsn', 'k'], 'pglock: unknown option "--jsn"\nTry "pglock hash --help".\n'],
    [['run', '--frob', 'k', '--', 'true'], 'pglock: unknown option "--frob"\nTry "pglock run --help".\n'],
    [['run', '--timeout'], 'pglock: option "-t, --timeout <value>" argument missing\nTry "pglock run --help".\n'],
    [['run', '--', 'true'], 'pglock: missing KEY\nTry "pglock run --help".\n'],
    [['run', 'k'], 'pglock: missing command: pglock run KEY [options] -- COMMAND [ARGS...]\nTry "pglock run --help".\n'],
    [
      ['run', 'k', 'true'],
      'pglock: unexpected "true": put the command after "--", as in: pglock run KEY -- COMMAND\nTry "pglock run --help".\n',
    ],
    [
      ['run', '--timeout', 'soon', 'k', '--', 'true'],
      'pglock: --timeout takes a duration such as 500ms, 30s, 2m or a number of milliseconds, got "soon"\nTry "pglock run --help".\n',
    ],
    [['run', '--keep-alive', '0', 'k', '--', 'true'], 'pglock: --keep-alive must be longer than 0\nTry "pglock run --help".\n'],
    [
      ['run', '--try', '--timeout', '1s', 'k', '--', 'true'],
      'pglock: --try and --timeout exclude each other: --try never waits\nTry "pglock run --help".\n',
    ],
    [['lock', 'k'], 'pglock: no such command: "lock"\nTry "pglock --help".\n'],
    [['--frob'], 'pglock: unknown option "--frob": options follow the command\nTry "pglock --help".\n'],
    [[], expect.stringContaining('Usage: pglock <command> [options]')],
  ])('pglock %j exits 2 and says why on stderr', async (args, stderr) => {
    expect(await pglock(args, { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' })).toMatchObject({ code: 2, stdout: '', stderr })
  })

  it('prints --version', async () => {
    expect(await pglock(['--version'])).toMatchObject({ code: 0, stdout: `${version}\n` })
  })

  it.each([
    [['--help'], 'Usage: pglock <command>'],
    [['help', 'run'], 'Usage: pglock run KEY'],
    [['run', '--help'], 'Usage: pglock run KEY'],
    [['run', '-h'], 'Exit status:'],
    [['hash', '--help'], 'Usage: pglock hash KEY'],
    [['holders', '--help'], 'Usage: pglock holders'],
  ])('pglock %j prints help to stdout and exits 0', async (args, text) => {
    const result = await pglock(args)
    expect(result).toMatchObject({ code: 0, stderr: '' })
    expect(result.stdout).toContain(text)
  })
})
