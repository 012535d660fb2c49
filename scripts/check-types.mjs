/**
 * The consumer type test, run by check-packages.mjs once it has installed the packed tarballs:
 * compiles the programs in scripts/types/ against the declarations users get, with the oldest
 * TypeScript that knows `await using` (5.2), the last 5.x, and the newest 7.x (the native
 * compiler). Settings are a strict user's defaults: `strict`, no `types` (so TypeScript 7 loads
 * no @types package that nothing references), no `skipLibCheck`.
 *
 * - The adapters' files run beside every adapter and its driver, as the READMEs use them: as ESM
 *   and as CommonJS (each copy in a package of that type) under `nodenext` on every version, and
 *   as ESM under `bundler` on 7. On 5.x the files that import @pglock/drizzle run as ESM only:
 *   drizzle-orm's declarations make up most of the time, and a second copy (its .d.cts) about
 *   doubles it; 7 and attw cover Drizzle under CommonJS.
 * - core.ts runs in a folder holding @pglock/core alone, with no @types at all, under `bundler`
 *   with target ES2022 (whose lib has no `AsyncDisposable`) on every version, and under
 *   `nodenext` on 7: the core's declarations must stand on TypeScript's own lib.
 *
 * Errors inside other packages' declarations are counted, not failed: drizzle-orm's fail a full
 * lib check on every TypeScript (its gel-core wants the `gel` package), and pg-protocol's need a
 * newer @types/node than TypeScript 5.2 reads. Their users meet those with or without pglock.
 * An error in pglock's declarations, in a consumer file, or in no file (a missing global type)
 * fails the check.
 */
import { execFile, execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { basename, join, resolve } from 'node:path'

const consumers = resolve(import.meta.dirname, 'types')

/** The compilers, installed side by side under npm aliases; the last is the newest. */
const compilers = [
  // TypeScript before 5.8 cannot model require() of an ES module, which postgres.js 4 is only
  { alias: 'typescript-5.2', spec: 'typescript@~5.2.0', requiresEsm: false },
  { alias: 'typescript-5.9', spec: 'typescript@~5.9.0' },
  { alias: 'typescript-7', spec: 'typescript@7' },
]

/**
 * Consumer files expected to fail until the change they test lands: their errors are shown, not
 * failed. Empty unless such a change is in flight.
 */
const pending = new Set([])

const nodenext = { strict: true, module: 'nodenext', moduleResolution: 'nodenext', noEmit: true }
// A bundler project names its target; TypeScript 5's default (ES5) is no one's setting.
const bundler = { strict: true, target: 'es2022', module: 'esnext', moduleResolution: 'bundler', noEmit: true }

/**
 * @param {object} context
 * @param {string} context.work a scratch folder
 * @param {string} context.app the folder where the tarballs and their peers are installed
 * @param {{ manifest: { name: string }, tarball: string }[]} context.packed
 * @param {(label: string, action: () => void) => void} context.step runs and reports one check
 */
export async function checkTypes({ work, app, packed, step }) {
  const started = performance.now()
  const available = new Set(packed.map((p) => p.manifest.name))
  const usable = readdirSync(consumers).filter((file) => file.endsWith('.ts') && imports(file).every((name) => available.has(name)))
  const coreFiles = usable.filter((file) => imports(file).every((name) => name === '@pglock/core'))
  const adapterFiles = usable.filter((file) => !coreFiles.includes(file))
  const withoutDrizzle = adapterFiles.filter((file) => !imports(file).includes('@pglock/drizzle'))

  const tools = join(work, 'compilers')
  if (
    !install(
      step,
      tools,
      `types: npm install ${compilers.map((c) => c.spec).join(', ')}`,
      compilers.map((c) => `${c.alias}@npm:${c.spec}`),
    )
  ) {
    return
  }
  const coreApp = join(work, 'core-app')
  const core = packed.find((p) => p.manifest.name === '@pglock/core')
  const coreReady = core && coreFiles.length > 0 && install(step, coreApp, 'types: npm install of @pglock/core alone', [core.tarball])

  // Largest first, so that two workers finish together.
  const programs = []
  for (const compiler of compilers) {
    const newest = compiler === compilers.at(-1)
    if (adapterFiles.length === 0) break
    const cjs = (newest ? adapterFiles : withoutDrizzle).filter(
      (file) =>
        compiler.requiresEsm !== false || !imports(file).some((name) => name === '@pglock/postgres-js' || name === '@pglock/drizzle'),
    )
    const what =
      cjs.length === adapterFiles.length
        ? 'ESM + CJS'
        : `ESM; CJS without Drizzle${compiler.requiresEsm === false ? ' and postgres.js (ESM-only 4.x)' : ''}`
    programs.push(program(app, tools, compiler, `every adapter, nodenext (${what})`, nodenext, adapterFiles, cjs))
  }
  if (adapterFiles.length > 0) programs.push(program(app, tools, compilers.at(-1), 'every adapter, bundler', bundler, adapterFiles, []))
  if (coreReady) {
    for (const compiler of compilers)
      programs.push(program(coreApp, tools, compiler, '@pglock/core alone, bundler', bundler, coreFiles, []))
    programs.push(program(coreApp, tools, compilers.at(-1), '@pglock/core alone, nodenext (ESM + CJS)', nodenext, coreFiles, coreFiles))
  }

  const results = await pool(programs, Math.min(4, availableParallelism()), compile)
  const stillFailing = new Set()
  for (const result of results) {
    step(result.label, () => {
      for (const [file, blocks] of result.pending) {
        if (!stillFailing.has(file)) console.log(`  pending ${file}, errors expected until its change lands:\n${blocks.join('\n')}`)
        stillFailing.add(file)
      }
      if (result.ours.length > 0 || result.crashed) throw new Error(result.crashed ? result.output : result.ours.join('\n'))
    })
  }
  const compiled = new Set(programs.flatMap((p) => p.names))
  for (const file of pending) {
    if (compiled.has(file) && !stillFailing.has(file)) {
      console.log(`  note ${file} type-checks now: delete it from \`pending\` in scripts/check-types.mjs`)
    }
  }
  console.log(`  types: ${results.length} programs compiled in ${((performance.now() - started) / 1000).toFixed(1)} s`)
}

/** The @pglock packages a consumer file imports. */
function imports(file) {
  const source = readFileSync(join(consumers, file), 'utf8')
  return [...source.matchAll(/from '(@pglock\/[^'/]+)/g)].map((match) => match[1])
}

function install(step, dir, label, specs) {
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'package.json'), '{ "private": true }')
  let done = false
  step(label, () => {
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', ...specs], { cwd: dir, stdio: 'pipe', encoding: 'utf8' })
    done = true
  })
  return done
}

/**
 * One tsconfig under `root`: `esm` as ESM files and `cjs` as CommonJS files, each copied into a
 * package of that type (ESM files only, under `bundler`).
 */
function program(root, tools, compiler, description, compilerOptions, esm, cjs) {
  const files = []
  for (const [dir, type, names] of [
    ['esm', 'module', esm],
    ['cjs', 'commonjs', cjs],
  ]) {
    if (names.length === 0) continue
    mkdirSync(join(root, dir), { recursive: true })
    writeFileSync(join(root, dir, 'package.json'), JSON.stringify({ type }))
    for (const name of names) {
      copyFileSync(join(consumers, name), join(root, dir, name))
      files.push(`${dir}/${name}`)
    }
  }
  const tsconfig = join(root, `tsconfig.${compiler.alias}.${compilerOptions.moduleResolution}.json`)
  writeFileSync(tsconfig, JSON.stringify({ compilerOptions, files }, null, 2))
  const tsc = join(tools, 'node_modules', compiler.alias, 'bin', 'tsc')
  return { root, tsc, tsconfig, description, names: [...new Set([...esm, ...cjs])] }
}

async function compile({ root, tsc, tsconfig, description }) {
  const started = performance.now()
  const { code, output } = await new Promise((done) =>
    execFile(process.execPath, [tsc, '-p', tsconfig, '--pretty', 'false'], { cwd: root, maxBuffer: 64 << 20 }, (error, stdout, stderr) =>
      done({ code: error ? (error.code ?? 1) : 0, output: `${stdout}${stderr}` }),
    ),
  )
  const { version } = JSON.parse(readFileSync(join(tsc, '..', '..', 'package.json'), 'utf8'))
  const ours = []
  const pendingBlocks = new Map()
  const elsewhere = new Map()
  const blocks = diagnosticBlocks(output)
  for (const block of blocks) {
    const file = /^(.+?)\(\d+,\d+\): error /.exec(block)?.[1]
    const owner = file ? /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file)?.[1] : undefined
    if (file && pending.has(basename(file))) pendingBlocks.set(basename(file), [...(pendingBlocks.get(basename(file)) ?? []), block])
    else if (owner && !owner.startsWith('@pglock/')) elsewhere.set(owner, (elsewhere.get(owner) ?? 0) + 1)
    else ours.push(block)
  }
  const notes = [`${((performance.now() - started) / 1000).toFixed(1)} s`]
  for (const [file, found] of pendingBlocks) notes.push(`pending ${file}: ${found.length} errors`)
  if (elsewhere.size > 0) notes.push(`errors in other packages: ${[...elsewhere].map(([name, count]) => `${name} ${count}`).join(', ')}`)
  return {
    label: `types: TypeScript ${version}, ${description} (${notes.join('; ')})`,
    ours,
    pending: pendingBlocks,
    crashed: code !== 0 && blocks.length === 0,
    output,
  }
}

/** tsc's diagnostics without `--pretty`: a line `file(line,col): error TSnnnn: ...` or `error TSnnnn: ...`, then indented lines. */
function diagnosticBlocks(output) {
  const blocks = []
  for (const line of output.split('\n')) {
    if (/^(?:.+?\(\d+,\d+\): )?error TS\d+:/.test(line)) blocks.push(line)
    else if (/^\s+\S/.test(line) && blocks.length > 0) blocks[blocks.length - 1] += `\n${line}`
  }
  return blocks
}

async function pool(items, size, work) {
  const results = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await work(items[index])
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, size) }, worker))
  return results
}
