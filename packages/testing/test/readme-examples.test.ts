import { execFile, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, inject, it } from 'vitest'
import { installPacked, packPackages, publicPackages, root } from '../../../scripts/pack.mjs'
import { type ReadmeBlock, readmeBlocks } from '../src/readme-blocks.ts'

/**
 * Every code block of every README, compiled against the packed packages as npm installs them
 * and run against a real Postgres, so that an example can never drift from the code. The marks a
 * block may carry are described in `src/readme-blocks.ts`; what a fragment may assume is in
 * `readme/wrappers/`. Each block runs in a process of its own, against a database created for
 * this run (`DATABASE_URL`), and must leave no advisory lock held there.
 */

const SETUP_TIMEOUT_MS = 600_000
const BLOCK_TIMEOUT_MS = 60_000
/** Packages the examples import besides the packed packages and their peers. */
const EXTRA_PACKAGES = ['kysely-postgres-js@3', '@opentelemetry/sdk-trace-node@2', '@opentelemetry/sdk-metrics@2']

const here = join(root, 'packages/testing/readme')
const readmes = [
  'README.md',
  ...['packages', 'examples'].flatMap((parent) => readdirSync(join(root, parent)).map((name) => `${parent}/${name}/README.md`)),
  'bench/README.md',
].filter((file) => existsSync(join(root, file)))
const blocks = readmes.flatMap((file) => readmeBlocks(file, readFileSync(join(root, file), 'utf8')))
const wrappers = readdirSync(join(here, 'wrappers')).filter((name) => name.endsWith('.ts'))

/** tsc's verdict on one block: its errors, with README lines, and where its JavaScript went. */
interface Compiled {
  readonly errors: readonly string[]
  readonly output: string
}

let work: string | undefined
let examples = ''
let adminUrl = ''
let databaseName: string | undefined
let databaseUrl = ''
const compiled = new Map<ReadmeBlock, Compiled>()

beforeAll(async () => {
  const started = performance.now()
  work = mkdtempSync(join(tmpdir(), 'pglock-readme-'))
  const app = join(work, 'app')
  installPacked(app, packPackages(publicPackages(), work), EXTRA_PACKAGES)
  const installed = performance.now()
  await createDatabase()
  examples = join(app, 'examples')
  writeExamples()
  compileExamples(join(app, 'node_modules/typescript/bin/tsc'))
  const done = performance.now()
  console.log(`README examples: packed and installed in ${seconds(installed - started)}, database and tsc in ${seconds(done - installed)}`)
}, SETUP_TIMEOUT_MS)

afterAll(async () => {
  if (databaseName) {
    const admin = new pg.Client({ connectionString: adminUrl })
    await admin.connect()
    await admin.query(`DROP DATABASE IF EXISTS ${databaseName} WITH (FORCE)`).finally(() => admin.end())
  }
  if (work) rmSync(work, { recursive: true, force: true })
})

const tested = readmes.filter((file) => blocks.some((block) => block.file === file && block.lang !== 'sh'))

describe.each(tested)('%s', (file) => {
  for (const block of blocks.filter((b) => b.file === file && b.lang !== 'sh')) {
    const where = `${block.file}:${block.line}`
    if (block.lang === 'sql') {
      it.skipIf(block.noRun !== undefined)(`${where} (sql) runs`, async () => {
        await withClient((client) => client.query(block.code)).catch((error: unknown) => {
          throw new Error(`${where}: ${String(error)}`, { cause: error })
        })
      })
    } else if (block.lang === 'ts') {
      const runs = block.noRun === undefined && block.module === undefined
      const what = block.module ? `module ${block.module}` : block.fragment ? `fragment in ${block.fragment}` : 'program'
      const verdict = runs ? 'compiles and runs' : block.noRun ? `compiles; not run: ${block.noRun}` : 'compiles'
      it(
        `${where} (${what}) ${verdict}`,
        async () => {
          const result = compiled.get(block)
          if (!result) throw new Error(`${where}: not compiled (the setup failed)`)
          if (result.errors.length > 0) throw new Error(`${where}: does not compile:\n${result.errors.join('\n')}`)
          if (runs) await runBlock(block, result.output)
        },
        BLOCK_TIMEOUT_MS + 10_000,
      )
    } else {
      it(`${where} (${block.lang || 'no language'}) is marked no-run`, () => {
        if (block.noRun === undefined) throw new Error(`${where}: a ${block.lang || 'bare'} block must be marked <!-- no-run: why -->`)
      })
    }
  }
})

/** A database of this run's own, so that the examples' tables and keys meet nobody else's. */
async function createDatabase(): Promise<void> {
  adminUrl = inject('databaseUrl')
  const name = `pglock_readme_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: adminUrl })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE template0`)
    databaseName = name
  } finally {
    await admin.end()
  }
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  databaseUrl = url.toString()
  await withClient((client) => client.query(readFileSync(join(here, 'fixture.sql'), 'utf8')))
}

function writeExamples(): void {
  mkdirSync(join(examples, 'wrappers'), { recursive: true })
  writeFileSync(join(examples, 'package.json'), JSON.stringify({ type: 'module' }))
  cpSync(join(here, 'tsconfig.examples.json'), join(examples, 'tsconfig.json'))
  cpSync(join(here, 'run.mjs'), join(examples, 'run.mjs'))
  for (const name of wrappers) cpSync(join(here, 'wrappers', name), join(examples, 'wrappers', name))
  for (const block of blocks) {
    if (block.lang !== 'ts') continue
    const source = sourceOf(block)
    mkdirSync(dirname(join(examples, source.path)), { recursive: true })
    writeFileSync(join(examples, source.path), source.text)
  }
}

/** One tsc run over every block and wrapper; each block's errors are kept for its own test. */
function compileExamples(tsc: string): void {
  const { stdout, stderr } = spawnSync(process.execPath, [tsc, '-p', examples, '--pretty', 'false'], { cwd: examples, encoding: 'utf8' })
  const diagnostics = parseDiagnostics(`${stdout}${stderr}`)
  const paths = new Set<string>()
  for (const block of blocks) {
    if (block.lang !== 'ts') continue
    const { path } = sourceOf(block)
    paths.add(path)
    const errors = (diagnostics.get(path) ?? []).map(({ line, message }) => `${block.file}:${readmeLine(block, line)}: ${message}`)
    compiled.set(block, { errors, output: join(examples, 'out', path.replace(/\.ts$/, '.js')) })
  }
  const elsewhere = [...diagnostics].filter(([path]) => !paths.has(path))
  if (elsewhere.length > 0) {
    const lines = elsewhere.flatMap(([path, found]) => found.map(({ line, message }) => `${path}:${line}: ${message}`))
    throw new Error(`tsc failed outside the README blocks:\n${lines.join('\n')}`)
  }
}

function slugOf(file: string): string {
  return file === 'README.md' ? 'root' : dirname(file).replaceAll('/', '-')
}

/** Where a block's TypeScript goes under `examples/`, and its text: a fragment's starts with its wrapper's import. */
function sourceOf(block: ReadmeBlock): { path: string; text: string } {
  const path = join(slugOf(block.file), block.module ?? `L${block.line}.ts`)
  if (!block.fragment) return { path, text: block.code }
  const wrapper = `${block.fragment}.ts`
  if (!wrappers.includes(wrapper)) throw new Error(`${block.file}:${block.line}: no wrapper ${wrapper} in ${join(here, 'wrappers')}`)
  const names = exportsOf(readFileSync(join(here, 'wrappers', wrapper), 'utf8')).filter((name) => name !== 'close')
  return { path, text: `import { ${names.join(', ')} } from '../wrappers/${block.fragment}.js'\n${block.code}` }
}

function exportsOf(source: string): string[] {
  return [...source.matchAll(/^export\s+(?:async\s+)?(?:function|const|let|class|interface|type)\s+(\w+)/gm)].map((match) => match[1] ?? '')
}

/** The README line of line `line` (1-based) of a block's TypeScript file. */
function readmeLine(block: ReadmeBlock, line: number): number {
  return block.line + line - 1 - (block.fragment ? 1 : 0)
}

function parseDiagnostics(output: string): Map<string, { line: number; message: string }[]> {
  const found = new Map<string, { line: number; message: string }[]>()
  let last: { line: number; message: string } | undefined
  for (const text of output.split('\n')) {
    if (text.trim() === '') continue
    const match = /^(.+?)\((\d+),\d+\): (error .*)$/.exec(text)
    if (match) {
      const [, path = '', line = '0', message = ''] = match
      last = { line: Number(line), message }
      found.set(path, [...(found.get(path) ?? []), last])
    } else if (last) {
      last.message += `\n    ${text.trim()}`
    } else {
      found.set('(tsc)', [...(found.get('(tsc)') ?? []), { line: 0, message: text }])
    }
  }
  return found
}

function runBlock(block: ReadmeBlock, output: string): Promise<void> {
  const where = `${block.file}:${block.line}`
  const args = ['--enable-source-maps', join(examples, 'run.mjs'), output]
  if (block.fragment) args.push(join(examples, 'out', 'wrappers', `${block.fragment}.js`))
  const env = { ...process.env, DATABASE_URL: databaseUrl }
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: examples, env, timeout: BLOCK_TIMEOUT_MS, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      if (!error) return resolve()
      const reason = error.killed ? `did not finish within ${BLOCK_TIMEOUT_MS} ms` : `exited with ${error.code ?? error.signal}`
      reject(new Error(`${where}: ${reason}\n${mapStack(block, `${stdout}${stderr}`)}`))
    })
  })
}

/** Rewrites `<examples>/<slug>/L57.ts:LINE` in a stack trace to the README's path and line. */
function mapStack(block: ReadmeBlock, text: string): string {
  const source = join(examples, sourceOf(block).path)
  const [first = '', ...rest] = text.split(source)
  const readme = join(root, block.file)
  const mapped = rest.map((part) => {
    const line = /^:(\d+)/.exec(part)
    return line ? `${readme}:${readmeLine(block, Number(line[1]))}${part.slice(line[0].length)}` : `${source}${part}`
  })
  return first + mapped.join('')
}

async function withClient<T>(action: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: databaseUrl })
  await client.connect()
  try {
    return await action(client)
  } finally {
    await client.end()
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}
