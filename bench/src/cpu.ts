import { readFileSync } from 'node:fs'
import pg from 'pg'

/** CPU time spent so far by this process and by a set of Postgres backends. */
export interface CpuMark {
  readonly clientUs: number
  /** `undefined` when the backends cannot be seen from here (a remote server, a container) */
  readonly serverNs: number | undefined
  readonly pids: readonly number[]
}

/** CPU time spent between two marks, in µs. */
export interface CpuSpent {
  readonly clientUs: number
  readonly serverUs: number | undefined
}

function runNs(pid: number): number | undefined {
  try {
    const [onCpu] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')
    return Number(onCpu)
  } catch {
    return undefined
  }
}

function isPostgres(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('postgres')
  } catch {
    return false
  }
}

/**
 * Measures CPU time per lock cycle on both ends: this process (`process.cpuUsage`) and, when
 * Postgres runs on this machine, the backends serving a contender (found by application name
 * in `pg_stat_activity`, read from `/proc/<pid>/schedstat` in ns). Unlike wall time, CPU time
 * per cycle barely moves when other work shares the machine, so it shows what a cycle costs
 * even on a noisy host. Backends that come and go within a slice (a connection per lock, as
 * `advisory-lock` opens) are not counted: their server CPU is reported as unknown.
 */
export class CpuMeter {
  readonly #admin: pg.Client

  private constructor(admin: pg.Client) {
    this.#admin = admin
  }

  static async open(url: string): Promise<CpuMeter> {
    const admin = new pg.Client({ connectionString: url, application_name: `pglock-bench-${process.pid}-cpu-meter` })
    await admin.connect()
    return new CpuMeter(admin)
  }

  /** The backends serving `applicationName` now, if they run on this machine. */
  async backends(applicationName: string): Promise<number[] | undefined> {
    const { rows } = await this.#admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [
      applicationName,
    ])
    const pids = rows.map((row) => row.pid)
    return pids.length > 0 && pids.every(isPostgres) ? pids : undefined
  }

  mark(pids: readonly number[] | undefined): CpuMark {
    const { user, system } = process.cpuUsage()
    let serverNs: number | undefined = pids === undefined ? undefined : 0
    for (const pid of pids ?? []) {
      const ns = runNs(pid)
      serverNs = ns === undefined || serverNs === undefined ? undefined : serverNs + ns
    }
    return { clientUs: user + system, serverNs, pids: pids ?? [] }
  }

  static spent(from: CpuMark, to: CpuMark): CpuSpent {
    const serverUs = from.serverNs === undefined || to.serverNs === undefined ? undefined : (to.serverNs - from.serverNs) / 1000
    return { clientUs: to.clientUs - from.clientUs, serverUs }
  }

  close(): Promise<void> {
    return this.#admin.end()
  }
}
