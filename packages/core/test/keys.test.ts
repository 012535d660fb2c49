import { describe, expect, it } from 'vitest'
import { InvalidArgumentError, InvalidKeyError, PgLockError, pgLocksRow, postgresLock01, resolveLockId, sha1Int64 } from '../src/index.js'

/** Computed with Python's hashlib, the way postgresql-lock and postgres-lock 0.1 hash str keys. */
const vectors: [string, bigint, bigint][] = [
  ['shared-identifier', -464685171814670893n, 142468548502040132n],
  ['', -2721964255587120371n, 124584541093122799n],
  ['é', -4677623243354296192n, 109090214282592849n],
  ['🔒 lock', 7774431551107920101n, 615953926387202465n],
  ['invoice:42', -2254116582631872048n, 128291212239604680n],
]

describe('string keys', () => {
  for (const [key, sha1, legacy] of vectors) {
    it(`hashes ${JSON.stringify(key)} as Python does, in both schemes`, () => {
      expect(sha1Int64(key)).toBe(sha1)
      expect(postgresLock01(key)).toBe(legacy)
      expect(resolveLockId(key)).toEqual({ kind: 'int64', value: sha1 })
      expect(resolveLockId(key, { keyHash: 'postgres-lock-0.1' })).toEqual({ kind: 'int64', value: legacy })
    })
  }

  it('accepts a custom hash and refuses one that leaves int64', () => {
    expect(resolveLockId('x', { keyHash: () => 7n })).toEqual({ kind: 'int64', value: 7n })
    expect(() => resolveLockId('x', { keyHash: () => 2n ** 63n })).toThrow(InvalidKeyError)
    expect(() => resolveLockId('x', { keyHash: (() => 1) as unknown as () => bigint })).toThrow(InvalidKeyError)
    expect(() => resolveLockId('x', { keyHash: 'md5' as never })).toThrow(InvalidArgumentError)
  })
})

describe('integer keys', () => {
  it('takes the int64 and int32 boundaries and nothing past them', () => {
    expect(resolveLockId(-(2n ** 63n)).value).toBe(-(2n ** 63n))
    expect(resolveLockId(2n ** 63n - 1n).value).toBe(2n ** 63n - 1n)
    expect(resolveLockId(Number.MAX_SAFE_INTEGER).value).toBe(BigInt(Number.MAX_SAFE_INTEGER))
    expect(resolveLockId([-(2 ** 31), 2 ** 31 - 1]).value).toEqual([-(2 ** 31), 2 ** 31 - 1])
    for (const bad of [
      2n ** 63n,
      -(2n ** 63n) - 1n,
      Number.MAX_SAFE_INTEGER + 1,
      -0.5,
      Number.POSITIVE_INFINITY,
      [2 ** 31, 0],
      [0, 1.5],
      [],
    ]) {
      expect(() => resolveLockId(bad)).toThrow(expect.objectContaining({ code: 'INVALID_KEY' }))
    }
  })

  it('says what is wrong with a number that cannot be a key', () => {
    expect(() => resolveLockId(1.5)).toThrow('key 1.5 is not an integer')
    expect(() => resolveLockId(Number.NaN)).toThrow('key NaN is not an integer')
    expect(() => resolveLockId(2 ** 60)).toThrow(/not a safe integer; pass a bigint/)
  })

  it('places ids in pg_locks columns as Postgres does', () => {
    expect(pgLocksRow(resolveLockId(1))).toEqual({ classid: 0, objid: 1, objsubid: 1 })
    expect(pgLocksRow(resolveLockId(-1))).toEqual({ classid: 4294967295, objid: 4294967295, objsubid: 1 })
    expect(pgLocksRow(resolveLockId(2n ** 32n + 5n))).toEqual({ classid: 1, objid: 5, objsubid: 1 })
    expect(pgLocksRow(resolveLockId([-1, 7]))).toEqual({ classid: 4294967295, objid: 7, objsubid: 2 })
  })
})

describe('errors', () => {
  it('are recognised by instanceof across copies of the package', () => {
    const error = new InvalidKeyError('bad key', { key: 'k' })
    const fromAnotherCopy = Object.setPrototypeOf({ ...error, name: 'InvalidKeyError', code: 'INVALID_KEY' }, Object.getPrototypeOf(error))
    const foreign = Object.create(null)
    foreign[Symbol.for('@pglock/core/PgLockError')] = 'INVALID_KEY'
    foreign.name = 'InvalidKeyError'
    expect(error).toBeInstanceOf(PgLockError)
    expect(fromAnotherCopy).toBeInstanceOf(InvalidKeyError)
    expect(foreign).toBeInstanceOf(PgLockError)
    expect(foreign).toBeInstanceOf(InvalidKeyError)
    expect(new Error('x')).not.toBeInstanceOf(PgLockError)
    expect(error).toMatchObject({ code: 'INVALID_KEY', key: 'k', name: 'InvalidKeyError' })
  })
})
