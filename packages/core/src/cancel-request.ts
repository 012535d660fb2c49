import { createConnection } from 'node:net'

const CANCEL_REQUEST_CODE = 80877102
const CANCEL_TIMEOUT_MS = 5_000

/**
 * A server session's backend key data, which a CancelRequest names.
 *
 * @example
 * ```ts
 * const backend: BackendKey = { pid: 4242, secret: 1234 }
 * ```
 */
export interface BackendKey {
  /** The backend's process id, as the server sent it in BackendKeyData. */
  readonly pid: number
  /** The secret key from the same message. */
  readonly secret: number
}

/**
 * Sends the protocol's CancelRequest for `backend` on a new socket to `host`:`port` (a directory
 * host means a Unix socket). Works through a pooler such as PgBouncer, and for a connection the
 * driver has dropped, whose backend Postgres would otherwise leave waiting for the lock.
 * Resolves once the server has closed the socket, which it does after signalling the backend, so
 * a late cancel cannot hit a later statement. Never rejects; gives up after 5 s.
 *
 * @example
 * ```ts
 * await sendCancelRequest('127.0.0.1', 5432, { pid: 4242, secret: 1234 })
 * ```
 */
export function sendCancelRequest(host: string, port: number, backend: BackendKey): Promise<void> {
  const request = Buffer.alloc(16)
  request.writeInt32BE(16, 0)
  request.writeInt32BE(CANCEL_REQUEST_CODE, 4)
  request.writeInt32BE(backend.pid, 8)
  request.writeInt32BE(backend.secret, 12)
  return new Promise((resolve) => {
    const socket = host.startsWith('/') ? createConnection(`${host}/.s.PGSQL.${port}`) : createConnection(port, host)
    socket.setTimeout(CANCEL_TIMEOUT_MS, () => socket.destroy())
    socket.once('connect', () => socket.write(request))
    socket.once('error', () => undefined)
    socket.once('close', () => resolve())
  })
}
