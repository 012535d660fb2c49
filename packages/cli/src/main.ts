import { InvalidKeyError } from '@pglock/pg'
import manifest from '../package.json' with { type: 'json' }
import { EXIT, ExitError, quote, usage } from './exit-codes.js'
import { hashText } from './hash.js'
import { HELP } from './help.js'
import { holdersText } from './holders.js'
import { parse, parseDuration, parseKeyHash } from './options.js'
import { runLocked } from './run.js'

const COMMANDS = ['run', 'hash', 'holders'] as const
type Command = (typeof COMMANDS)[number]

const isCommand = (name: string | undefined): name is Command => (COMMANDS as readonly string[]).includes(name ?? '')

/**
 * Runs `pglock` with `argv` (without node and the script) and resolves to its exit code.
 * Errors are printed to stderr as `pglock: <message>`.
 *
 * @example
 * ```ts
 * process.exitCode = await main(process.argv.slice(2))
 * ```
 */
export async function main(argv: string[]): Promise<number> {
  try {
    return await dispatch(argv)
  } catch (error) {
    if (error instanceof ExitError) {
      // an empty message is a failure --quiet asked not to explain
      if (error.message) console.error(`pglock: ${error.message}`)
      if (error.code === EXIT.usage) console.error(`Try ${quote(`pglock${error.command ? ` ${error.command}` : ''} --help`)}.`)
      return error.code
    }
    console.error(`pglock: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`)
    return EXIT.software
  }
}

async function dispatch(argv: string[]): Promise<number> {
  const [first, ...rest] = argv
  if (first === undefined) {
    console.error(HELP[''])
    return EXIT.usage
  }
  if (first === '-h' || first === '--help') return print(HELP[''])
  if (first === '-V' || first === '--version') return print(manifest.version)
  if (first === 'help') {
    const [topic] = rest
    if (topic === undefined) return print(HELP[''])
    if (isCommand(topic)) return print(HELP[topic])
    throw usage(undefined, `no such command: ${quote(topic)}`)
  }
  if (first.startsWith('-')) throw usage(undefined, `unknown option ${quote(first)}: options follow the command`)
  if (!isCommand(first)) throw usage(undefined, `no such command: ${quote(first)}`)
  if (first === 'run') return run(rest)
  if (first === 'hash') return hash(rest)
  return holders(rest)
}

function print(text: string): number {
  console.log(text)
  return 0
}

async function run(argv: string[]): Promise<number> {
  const split = argv.indexOf('--')
  const own = split === -1 ? argv : argv.slice(0, split)
  const { values, positionals } = parse('run', own, {
    timeout: { type: 'string', short: 't' },
    try: { type: 'boolean', short: 'n' },
    shared: { type: 'boolean', short: 's' },
    'keep-alive': { type: 'string' },
    'kill-after': { type: 'string' },
    'key-hash': { type: 'string' },
    url: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help) return print(HELP.run)
  const [key, ...extra] = positionals
  if (key === undefined) throw usage('run', 'missing KEY')
  if (extra.length > 0)
    throw usage('run', `unexpected ${quote(extra[0] ?? '')}: put the command after "--", as in: pglock run KEY -- COMMAND`)
  const [command, ...args] = split === -1 ? [] : argv.slice(split + 1)
  if (command === undefined) throw usage('run', 'missing command: pglock run KEY [options] -- COMMAND [ARGS...]')
  if (values.try && values.timeout !== undefined) throw usage('run', '--try and --timeout exclude each other: --try never waits')
  return runLocked({
    key,
    command,
    args,
    url: values.url,
    keyHash: parseKeyHash('run', values['key-hash']),
    shared: values.shared ?? false,
    try: values.try ?? false,
    timeoutMs: values.timeout === undefined ? undefined : parseDuration('run', '--timeout', values.timeout),
    keepAliveMs: values['keep-alive'] === undefined ? undefined : positive('--keep-alive', values['keep-alive']),
    killAfterMs: values['kill-after'] === undefined ? 10_000 : parseDuration('run', '--kill-after', values['kill-after']),
    quiet: values.quiet ?? false,
  })
}

function positive(option: string, text: string): number {
  const ms = parseDuration('run', option, text)
  if (ms === 0) throw usage('run', `${option} must be longer than 0`)
  return ms
}

function hash(argv: string[]): number {
  const { values, positionals } = parse('hash', argv, {
    'key-hash': { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help) return print(HELP.hash)
  if (positionals.length === 0) throw usage('hash', 'missing KEY')
  try {
    return print(hashText(positionals, parseKeyHash('hash', values['key-hash']), values.json ?? false))
  } catch (error) {
    if (error instanceof InvalidKeyError) throw usage('hash', error.message)
    throw error
  }
}

async function holders(argv: string[]): Promise<number> {
  const { values } = parse('holders', argv, {
    key: { type: 'string', short: 'k', multiple: true },
    'key-hash': { type: 'string', multiple: true },
    json: { type: 'boolean' },
    url: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  })
  if (values.help) return print(HELP.holders)
  const keyHash = (values['key-hash'] ?? ['sha1-int64']).map((each) => parseKeyHash('holders', each))
  return print(await holdersText({ keys: values.key, keyHash, url: values.url, json: values.json ?? false }))
}
