import { describe, expect, it } from 'vitest'
import { readmeBlocks } from '../src/readme-blocks.ts'

const fence = '```'

describe('readmeBlocks', () => {
  it('gives each block its language, its code and the README line of its first code line', () => {
    const text = ['# Title', '', `${fence}ts`, 'const a = 1', `${fence}`, '', `${fence}sh`, 'npm i x', fence, ''].join('\n')
    expect(readmeBlocks('R.md', text)).toEqual([
      { file: 'R.md', line: 4, lang: 'ts', code: 'const a = 1\n', fragment: undefined, noRun: undefined, module: undefined },
      { file: 'R.md', line: 8, lang: 'sh', code: 'npm i x\n', fragment: undefined, noRun: undefined, module: undefined },
    ])
  })

  it('reads the marks on the lines just above a fence', () => {
    const text = ['<!-- fragment: pg -->', '<!-- no-run: needs PgBouncer -->', `${fence}typescript`, 'x', fence].join('\n')
    expect(readmeBlocks('R.md', text)[0]).toMatchObject({ lang: 'ts', fragment: 'pg', noRun: 'needs PgBouncer', line: 4 })
  })

  it('refuses a mark that does not stand directly above a fence', () => {
    const text = ['<!-- fragment: pg -->', '', `${fence}ts`, 'x', fence].join('\n')
    expect(() => readmeBlocks('R.md', text)).toThrow('R.md:1: a mark must stand on the lines just above a fence')
  })

  it('refuses a malformed or empty mark, and a fence never closed', () => {
    expect(() => readmeBlocks('R.md', `<!-- no-run -->\n${fence}ts\nx\n${fence}`)).toThrow('R.md:1: malformed mark')
    expect(() => readmeBlocks('R.md', `<!-- no-run: -->\n${fence}ts\nx\n${fence}`)).toThrow('R.md:1: the mark "no-run" needs a value')
    expect(() => readmeBlocks('R.md', `${fence}ts\nx\n`)).toThrow('R.md:1: this fence is never closed')
  })

  it('strips the indentation of a fence inside a list item', () => {
    const text = ['- item:', '  ```ts', '  const a = 1', '  ```'].join('\n')
    expect(readmeBlocks('R.md', text)[0]).toMatchObject({ line: 3, code: 'const a = 1\n' })
  })
})
