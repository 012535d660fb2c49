import { createHash } from 'node:crypto'
import { describeValue, InvalidArgumentError, InvalidKeyError } from './errors.js'
import type { KeyHash, LockKey } from './types.js'

const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n
const INT32_MIN = -(2 ** 31)
const INT32_MAX = 2 ** 31 - 1

/**
 * A validated advisory lock id, as Postgres sees it: one int64, or a pair of int32.
 *
 * @example
 * ```ts
 * resolveLockId('shared-identifier') // { kind: 'int64', value: -464685171814670893n }
 * resolveLockId([7, 1001])           // { kind: 'pair', value: [7, 1001] }
 * ```
 */
export type LockId =
  | { readonly kind: 'int64'; readonly value: bigint }
  | { readonly kind: 'pair'; readonly value: readonly [number, number] }

/**
 * Hashes a string to the int64 lock id that Python `postgresql-lock` >= 0.1.6 uses: the first 8
 * bytes of SHA-1 over the UTF-8 bytes, read as a big-endian signed integer.
 *
 * @example
 * ```ts
 * sha1Int64('shared-identifier') // -464685171814670893n
 * ```
 */
export function sha1Int64(key: string): bigint {
  return createHash('sha1').update(key, 'utf8').digest().readBigInt64BE(0)
}

/**
 * Reproduces the lock id of Python `postgres-lock` 0.1.x: SHA-1 as a decimal number, its first
 * 18 digits read as an integer.
 *
 * @example
 * ```ts
 * postgresLock01('shared-identifier') // 142468548502040132n
 * ```
 */
export function postgresLock01(key: string): bigint {
  const digest = createHash('sha1').update(key, 'utf8').digest('hex')
  return BigInt(BigInt(`0x${digest}`).toString().slice(0, 18))
}

function hashString(key: string, keyHash: KeyHash): bigint {
  if (keyHash === 'sha1-int64') return sha1Int64(key)
  if (keyHash === 'postgres-lock-0.1') return postgresLock01(key)
  const id: unknown = keyHash(key)
  if (typeof id !== 'bigint' || id < INT64_MIN || id > INT64_MAX) {
    throw new InvalidKeyError(`keyHash returned ${String(id)} for ${JSON.stringify(key)}; it must return a bigint in int64 range`, { key })
  }
  return id
}

/** @internal A `keyHash` option: a wrong one is a wrong option (`INVALID_ARGUMENT`), whatever the key. */
export function checkKeyHash(keyHash: unknown): KeyHash {
  if (keyHash === 'sha1-int64' || keyHash === 'postgres-lock-0.1' || typeof keyHash === 'function') return keyHash as KeyHash
  throw new InvalidArgumentError(`keyHash must be 'sha1-int64', 'postgres-lock-0.1' or a function, got ${describeValue(keyHash)}`)
}

/**
 * Validates a key and turns it into the lock id Postgres will see. Throws `InvalidKeyError`
 * (code `INVALID_KEY`) for anything that cannot name an advisory lock.
 *
 * @example
 * ```ts
 * resolveLockId(42)                                  // { kind: 'int64', value: 42n }
 * resolveLockId('x', { keyHash: 'postgres-lock-0.1' }) // the Python 0.1.x id
 * resolveLockId(1.5)                                 // throws InvalidKeyError
 * resolveLockId('x', { keyHash: 'md5' })             // throws InvalidArgumentError
 * ```
 */
export function resolveLockId(key: unknown, options: { readonly keyHash?: KeyHash | undefined } = {}): LockId {
  const keyHash = checkKeyHash(options.keyHash ?? 'sha1-int64')
  if (typeof key === 'string') return { kind: 'int64', value: hashString(key, keyHash) }
  if (typeof key === 'bigint') {
    if (key < INT64_MIN || key > INT64_MAX) throw new InvalidKeyError(`key ${key}n is outside the int64 range`, { key })
    return { kind: 'int64', value: key }
  }
  if (typeof key === 'number') {
    if (!Number.isInteger(key)) throw new InvalidKeyError(`key ${key} is not an integer`, { key })
    if (!Number.isSafeInteger(key)) {
      throw new InvalidKeyError(`key ${key} is not a safe integer; pass a bigint for ids beyond 2^53`, { key })
    }
    return { kind: 'int64', value: BigInt(key) }
  }
  if (Array.isArray(key)) {
    const [a, b] = key as unknown[]
    if (key.length === 2 && isInt32(a) && isInt32(b)) return { kind: 'pair', value: [a, b] }
    throw new InvalidKeyError(`key pair must be two 32-bit signed integers, got [${key.map(String).join(', ')}]`, {
      key: key as unknown as LockKey,
    })
  }
  throw new InvalidKeyError(`key must be a string, a safe integer, a bigint or a pair of int32, got ${key === null ? 'null' : typeof key}`)
}

function isInt32(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= INT32_MIN && value <= INT32_MAX
}

/**
 * Where a lock id shows up in `pg_locks` (`locktype = 'advisory'`): `classid`, `objid` and
 * `objsubid` (1 for the int64 form, 2 for the pair form).
 *
 * @example
 * ```ts
 * pgLocksRow(resolveLockId(-1n)) // { classid: 4294967295, objid: 4294967295, objsubid: 1 }
 * ```
 */
export function pgLocksRow(id: LockId): { classid: number; objid: number; objsubid: 1 | 2 } {
  if (id.kind === 'pair') return { classid: id.value[0] >>> 0, objid: id.value[1] >>> 0, objsubid: 2 }
  const unsigned = BigInt.asUintN(64, id.value)
  return { classid: Number(unsigned >> 32n), objid: Number(unsigned & 0xffffffffn), objsubid: 1 }
}

/** @internal A string that identifies a lock id within one process, for in-memory queues. */
export function lockIdToken(id: LockId): string {
  return id.kind === 'pair' ? `${id.value[0]},${id.value[1]}` : String(id.value)
}
