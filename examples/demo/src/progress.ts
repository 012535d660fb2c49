/** Shows how far a phase has got: one line redrawn in place on a terminal, milestone lines otherwise. */
export interface Progress {
  update(done: number): void
  finish(elapsedMs: number): void
}

const BAR_WIDTH = 30
const REDRAW_EVERY_MS = 50
const MILESTONES = [25, 50, 75] as const

function percent(done: number, total: number): number {
  return Math.floor((100 * done) / total)
}

function bar(done: number, total: number): string {
  const filled = Math.round((BAR_WIDTH * done) / total)
  return `[${'#'.repeat(filled)}${'.'.repeat(BAR_WIDTH - filled)}]`
}

function line(label: string, done: number, total: number): string {
  return `${label} ${bar(done, total)} ${String(percent(done, total)).padStart(3)}%  ${done}/${total} increments`
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`
}

function terminalProgress(label: string, total: number, out: NodeJS.WriteStream): Progress {
  let drawnAt = 0
  const draw = (text: string) => out.write(`\r\x1b[2K${text}`)
  draw(line(label, 0, total))
  return {
    update(done) {
      const now = performance.now()
      if (now - drawnAt < REDRAW_EVERY_MS) return
      drawnAt = now
      draw(line(label, done, total))
    },
    finish(elapsedMs) {
      draw(`${line(label, total, total)} in ${seconds(elapsedMs)}\n`)
    },
  }
}

function milestoneProgress(label: string, total: number, out: NodeJS.WritableStream): Progress {
  const pending: number[] = [...MILESTONES]
  out.write(`${label} started\n`)
  return {
    update(done) {
      const reached = percent(done, total)
      while (pending[0] !== undefined && pending[0] <= reached) {
        pending.shift()
        out.write(`${line(label, done, total)}\n`)
      }
    },
    finish(elapsedMs) {
      out.write(`${line(label, total, total)} in ${seconds(elapsedMs)}\n`)
    },
  }
}

export function createProgress(label: string, total: number, out: NodeJS.WriteStream = process.stdout): Progress {
  return out.isTTY ? terminalProgress(label, total, out) : milestoneProgress(label, total, out)
}
