import { createConnection } from 'node:net'
import type { BackendKey } from './privates.js'

const CANCEL_REQUEST_CODE = 80877102
const CANCEL_TIMEOUT_MS = 5_000

/**
 * Sends the protocol's CancelRequest for `backend` on a new socket to `host`:`port` (a directory
 * host is a Unix socket's), and resolves once the server has closed it, which Postgres does after
 * signalling the backend. For a connection postgres.js 4.x has already dropped: Postgres does not
 * notice a vanished client while a backend waits for a lock, and would grant it to the dead session.
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
