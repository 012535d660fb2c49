/**
 * Runs `--warmup` then `--cycles` uncontended cycles of one contender and exits: a process to
 * count instructions in (`valgrind --tool=cachegrind`), where the difference between two cycle
 * counts is the instructions per cycle, the same on a busy machine as on a quiet one.
 */
import { parseArgs } from 'node:util'
import { CONTENDERS } from './contenders.js'
import { layerContenders } from './layers.js'

const { values } = parseArgs({ options: { contender: { type: 'string' }, cycles: { type: 'string' }, warmup: { type: 'string' } } })
const url = process.env.PGLOCK_BENCH_DATABASE_URL ?? process.env.DATABASE_URL
if (url === undefined) throw new Error('set PGLOCK_BENCH_DATABASE_URL')
const contender = [...CONTENDERS, ...layerContenders()].find((candidate) => candidate.name === values.contender)
if (contender === undefined) throw new Error(`unknown contender ${JSON.stringify(values.contender)}`)
const open = await contender.open({ url, poolSize: 1, applicationName: `pglock-bench-${process.pid}-count` })
const key = Math.floor(Math.random() * 2 ** 40)
const section = () => undefined
for (let index = 0; index < Number(values.warmup ?? 2000); index += 1) await open.cycle(key, section)
for (let index = 0; index < Number(values.cycles ?? 0); index += 1) await open.cycle(key, section)
await open.close()
