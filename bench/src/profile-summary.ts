/** Reading V8 CPU profiles: self time per function and per package, pglock frames mapped to their TypeScript source. */
import { readFileSync } from 'node:fs'
import { SourceMap } from 'node:module'
import { fileURLToPath } from 'node:url'

export interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number; readonly columnNumber: number }
  readonly children?: readonly number[]
}

export interface CpuProfile {
  readonly nodes: readonly ProfileNode[]
  readonly startTime: number
  readonly endTime: number
  readonly samples: readonly number[]
  readonly timeDeltas: readonly number[]
}

/** A pglock package's built file, in the workspace (`packages/pg/dist/`) or unpacked from its tarball (`node_modules/@pglock/pg/dist/`). */
const PGLOCK_DIST = /(?:packages|node_modules\/@pglock)\/([a-z-]+)\/dist\/(.*)$/

/** Where a frame's code lives: pglock's core, a pglock adapter, a driver or ORM, Node, or V8. */
export function area(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)'
  const pglock = PGLOCK_DIST.exec(url)
  if (pglock !== null) return pglock[1] === 'core' ? 'pglock core' : `pglock adapter (${pglock[1]})`
  const modules = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)\//.exec(url)
  if (modules !== null) return modules[1] as string
  if (url.startsWith('node:')) return 'node'
  if (url.includes('/bench/src/')) return 'bench'
  return url
}

const sourceMaps = new Map<string, SourceMap | undefined>()

/** A pglock frame's place in its TypeScript source (dist is built with source maps), else in its file. */
export function place(url: string, line: number, column: number): string {
  const pkg = PGLOCK_DIST.exec(url)?.[1]
  if (pkg !== undefined) {
    if (!sourceMaps.has(url)) {
      try {
        sourceMaps.set(url, new SourceMap(JSON.parse(readFileSync(`${fileURLToPath(url)}.map`, 'utf8'))))
      } catch {
        sourceMaps.set(url, undefined)
      }
    }
    const entry = sourceMaps.get(url)?.findEntry(line, column) as { originalSource?: string; originalLine?: number } | undefined
    if (entry?.originalSource !== undefined && entry.originalLine !== undefined) {
      const source = entry.originalSource.replace(/^.*?\/?src\//, '')
      return `${pkg}/src/${source}:${entry.originalLine + 1}`
    }
  }
  return `${short(url)}:${line + 1}`
}

function short(url: string): string {
  const source = /packages\/([a-z-]+)\/src\/(.*)$/.exec(url)
  if (source !== null) return `${source[1]}/src/${source[2]}`
  const pglock = PGLOCK_DIST.exec(url)
  if (pglock !== null) return `@pglock/${pglock[1]}/dist/${pglock[2]}`
  const modules = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?(.*)$/.exec(url)
  return modules?.[1] ?? url.replace(/^.*\/bench\/src\//, 'bench/src/')
}

/** Self time by function and by area, in µs per cycle, from a profile of `cycles` cycles. */
export function summarize(profile: CpuProfile, cycles: number) {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const selfUs = new Map<number, number>()
  for (const [index, id] of profile.samples.entries()) {
    // each sample's time is the delta to the next one
    const delta = profile.timeDeltas[index + 1] ?? 0
    selfUs.set(id, (selfUs.get(id) ?? 0) + delta)
  }
  const functions = new Map<string, { area: string; us: number }>()
  const areas = new Map<string, number>()
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber, columnNumber } = (byId.get(id) as ProfileNode).callFrame
    const where = area(url, functionName)
    const name = `${functionName || '(anonymous)'} ${url === '' ? '' : place(url, lineNumber, columnNumber)}`.trim()
    const entry = functions.get(name) ?? { area: where, us: 0 }
    entry.us += us / cycles
    functions.set(name, entry)
    areas.set(where, (areas.get(where) ?? 0) + us / cycles)
  }
  return {
    functions: [...functions].map(([name, { area, us }]) => ({ name, area, us })).sort((a, b) => b.us - a.us),
    areas: [...areas].map(([name, us]) => ({ name, us })).sort((a, b) => b.us - a.us),
    totalUs: (profile.endTime - profile.startTime) / cycles,
  }
}
