import net from 'node:net'

/** One client connection through the proxy, with its upstream socket. */
export interface ProxiedConnection {
  readonly client: net.Socket
  readonly server: net.Socket
  /** ReadyForQuery messages the server sent on this connection: one per round trip, plus one at startup. */
  readonly roundTrips: number
}

interface Link extends ProxiedConnection {
  roundTrips: number
  blackholed: boolean
  /** bytes of a server message split across chunks, kept to find message boundaries */
  pending: Buffer
}

/**
 * A TCP proxy between a driver and Postgres, in this process, for tests that need what a
 * network does on a bad day: connections reset (RST), blackholed (no packets, no RST), or
 * slowed. It also counts round trips: every `ReadyForQuery` message the server sends ends one.
 * It speaks plain TCP: use it without TLS (`sslmode=disable`, the drivers' default).
 *
 * @example
 * ```ts
 * const proxy = await FaultProxy.start(databaseUrl)
 * const pool = new pg.Pool({ connectionString: proxy.url })
 * proxy.reset()          // every connection gets an RST
 * await proxy.close()
 * ```
 */
export class FaultProxy {
  /** The database URL with host and port pointing at the proxy. */
  readonly url: string
  /** Delay added to every chunk in both directions, in ms. */
  latencyMs = 0
  /**
   * Withhold the server's BackendKeyData from connections opened from now on, as RDS Proxy does:
   * their clients then have no key to send a CancelRequest with.
   */
  withholdBackendKey = false
  readonly #server: net.Server
  readonly #links = new Set<Link>()
  #refuse = false
  #host: string
  #port: number

  private constructor(server: net.Server, url: string, host: string, port: number) {
    this.#server = server
    this.url = url
    this.#host = host
    this.#port = port
  }

  /** Starts a proxy on a free loopback port in front of the server `databaseUrl` names. */
  static async start(databaseUrl: string): Promise<FaultProxy> {
    const { host, port } = upstreamOf(databaseUrl)
    const server = net.createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const url = new URL(databaseUrl)
    url.hostname = '127.0.0.1'
    url.port = String((server.address() as net.AddressInfo).port)
    const proxy = new FaultProxy(server, url.toString(), host, port)
    server.on('connection', (client) => proxy.#accept(client))
    return proxy
  }

  /**
   * Sends new connections to the server `databaseUrl` names from now on, the way a virtual IP or
   * a DNS name moves in a failover. Connections open now stay on their old server until it (or
   * {@link reset}) ends them. The proxy's own `url` does not change: only host and port are taken.
   */
  retarget(databaseUrl: string): void {
    const { host, port } = upstreamOf(databaseUrl)
    this.#host = host
    this.#port = port
  }

  /** Connections open now. */
  get connections(): readonly ProxiedConnection[] {
    return [...this.#links]
  }

  /** Round trips completed on every connection so far, startup included. */
  get roundTrips(): number {
    let total = 0
    for (const link of this.#links) total += link.roundTrips
    return total + this.#closedRoundTrips
  }
  #closedRoundTrips = 0

  /** Resets every open connection (or those `which` selects) with a TCP RST. */
  reset(which: (connection: ProxiedConnection) => boolean = () => true): number {
    let count = 0
    for (const link of [...this.#links]) {
      if (!which(link)) continue
      count += 1
      link.client.resetAndDestroy()
      link.server.resetAndDestroy()
    }
    return count
  }

  /** Stops forwarding on open connections without closing them: no packets, no RST. */
  blackhole(which: (connection: ProxiedConnection) => boolean = () => true): number {
    let count = 0
    for (const link of this.#links) {
      if (!which(link)) continue
      count += 1
      link.blackholed = true
    }
    return count
  }

  /** While true, new connections are accepted and then reset at once, like a server that is down. */
  set refuseNew(value: boolean) {
    this.#refuse = value
  }

  /** Closes the proxy and every connection through it. */
  async close(): Promise<void> {
    for (const link of this.#links) {
      link.client.destroy()
      link.server.destroy()
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }

  #accept(client: net.Socket): void {
    if (this.#refuse) {
      client.resetAndDestroy()
      return
    }
    const server = net.connect(this.#port, this.#host)
    const link: Link = { client, server, roundTrips: 0, blackholed: false, pending: Buffer.alloc(0) }
    this.#links.add(link)
    const withhold = this.withholdBackendKey ? { pending: Buffer.alloc(0) } : undefined
    const forward = (from: net.Socket, to: net.Socket, count: boolean) => {
      from.on('data', (received: Buffer) => {
        if (link.blackholed) return
        if (count) this.#count(link, received)
        const chunk = count && withhold !== undefined ? withoutBackendKey(withhold, received) : received
        const send = () => {
          if (!link.blackholed && !to.destroyed) to.write(chunk)
        }
        if (this.latencyMs > 0) setTimeout(send, this.latencyMs)
        else send()
      })
    }
    forward(client, server, false)
    forward(server, client, true)
    // an upstream that cannot be reached (a crashed primary) refuses the client, as the server's own port would
    server.once('error', () => {
      if (server.connecting && !client.destroyed) client.resetAndDestroy()
    })
    const end = () => {
      if (!this.#links.delete(link)) return
      this.#closedRoundTrips += link.roundTrips
      client.destroy()
      server.destroy()
    }
    for (const socket of [client, server]) {
      socket.on('error', end)
      socket.on('close', end)
    }
  }

  /** Counts ReadyForQuery ('Z') messages in the server's stream, across chunk boundaries. */
  #count(link: Link, chunk: Buffer): void {
    let buffer = link.pending.length > 0 ? Buffer.concat([link.pending, chunk]) : chunk
    while (buffer.length >= 5) {
      const length = buffer.readInt32BE(1)
      if (buffer.length < 1 + length) break
      if (buffer[0] === 0x5a) link.roundTrips += 1
      buffer = buffer.subarray(1 + length)
    }
    link.pending = Buffer.from(buffer)
  }
}

function upstreamOf(databaseUrl: string): { host: string; port: number } {
  const target = new URL(databaseUrl)
  return { host: target.hostname || '127.0.0.1', port: Number(target.port || 5432) }
}

/** The server's stream with its BackendKeyData ('K') messages taken out; an unfinished message waits for the rest. */
function withoutBackendKey(state: { pending: Buffer }, chunk: Buffer): Buffer {
  let buffer = state.pending.length > 0 ? Buffer.concat([state.pending, chunk]) : chunk
  const kept: Buffer[] = []
  while (buffer.length >= 5) {
    const end = 1 + buffer.readInt32BE(1)
    if (buffer.length < end) break
    if (buffer[0] !== 0x4b) kept.push(buffer.subarray(0, end))
    buffer = buffer.subarray(end)
  }
  state.pending = Buffer.from(buffer)
  return Buffer.concat(kept)
}
