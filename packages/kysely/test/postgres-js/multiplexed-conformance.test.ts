import { describeConformance } from '@pglock/testing'
import { describe } from 'vitest'
import { postgresJs, refused } from './adapter.ts'
import adapter from './multiplexed-adapter.ts'

describe.skipIf(refused)(`over postgres.js ${postgresJs.version}`, () => describeConformance(adapter))
