/**
 * The fenced code blocks of a README, with the marks that tell the README examples test how to
 * treat each one. A mark is an HTML comment on the line(s) just above the fence, invisible on
 * GitHub and npm:
 *
 * - `<!-- fragment: pg -->`: the block assumes names it does not declare; it is compiled and run
 *   with the named wrapper's exports imported (`packages/testing/readme/wrappers/pg.ts`).
 * - `<!-- no-run: needs PgBouncer -->`: compiled, not run; the reason is required.
 * - `<!-- file: schema.ts -->`: a module that the README's other blocks import (`./schema.js`);
 *   compiled, and run wherever a block imports it.
 *
 * Without a mark, a `ts` block must be a whole program (imports included) and is compiled and
 * run; a `sql` block is run. Shell blocks (`sh`) are listed and never run. A block in any other
 * language needs `no-run`.
 *
 * @example
 * ```ts
 * for (const block of readmeBlocks('README.md', readFileSync('README.md', 'utf8'))) {
 *   console.log(`${block.file}:${block.line} ${block.lang}`, block.fragment ?? '')
 * }
 * ```
 */
export interface ReadmeBlock {
  /** The README's path, as given. */
  readonly file: string
  /** 1-based line of the block's first code line in the README. */
  readonly line: number
  /** `ts`, `sql` or `sh` (normalised from `typescript`, `bash`, ...), else the info string's first word. */
  readonly lang: string
  readonly code: string
  /** The wrapper named by a `fragment` mark. */
  readonly fragment?: string | undefined
  /** Why the block is not run, from a `no-run` mark. */
  readonly noRun?: string | undefined
  /** The module file name from a `file` mark. */
  readonly module?: string | undefined
}

const LANGUAGES: Readonly<Record<string, string>> = {
  ts: 'ts',
  typescript: 'ts',
  sql: 'sql',
  sh: 'sh',
  bash: 'sh',
  shell: 'sh',
  console: 'sh',
}

const MARK = /^\s*<!--\s*(fragment|no-run|file)\s*:\s*(.*?)\s*-->\s*$/
const ANY_MARK = /^\s*<!--\s*(fragment|no-run|file)\b/

/**
 * Splits a README into its fenced code blocks. Throws, naming the file and line, for a mark
 * that is unknown, empty, or not directly above a fence, and for a fence that is never closed.
 */
export function readmeBlocks(file: string, text: string): ReadmeBlock[] {
  const lines = text.split('\n')
  const blocks: ReadmeBlock[] = []
  let marks: { key: string; value: string; line: number }[] = []
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index] ?? ''
    const mark = MARK.exec(line)
    if (mark) {
      const [, key = '', value = ''] = mark
      if (value === '') throw new Error(`${file}:${index + 1}: the mark "${key}" needs a value`)
      marks.push({ key, value, line: index + 1 })
      continue
    }
    if (ANY_MARK.test(line)) throw new Error(`${file}:${index + 1}: malformed mark ${line.trim()}; write <!-- key: value -->`)
    const fence = /^(\s*)(`{3,}|~{3,})\s*([^\s`]*)/.exec(line)
    if (!fence) {
      if (marks.length > 0) throw new Error(`${file}:${marks[0]?.line}: a mark must stand on the lines just above a fence`)
      continue
    }
    const [, indent = '', ticks = '', info = ''] = fence
    const closing = new RegExp(`^\\s*${ticks[0] === '`' ? '`' : '~'}{${ticks.length},}\\s*$`)
    const body: string[] = []
    let end = index + 1
    while (end < lines.length && !closing.test(lines[end] ?? '')) {
      const content = lines[end] ?? ''
      body.push(content.startsWith(indent) ? content.slice(indent.length) : content.trimStart())
      end += 1
    }
    if (end >= lines.length) throw new Error(`${file}:${index + 1}: this fence is never closed`)
    const word = info.toLowerCase()
    const get = (key: string): string | undefined => marks.find((m) => m.key === key)?.value
    blocks.push({
      file,
      line: index + 2,
      lang: LANGUAGES[word] ?? word,
      code: `${body.join('\n')}\n`,
      fragment: get('fragment'),
      noRun: get('no-run'),
      module: get('file'),
    })
    marks = []
    index = end
  }
  return blocks
}
