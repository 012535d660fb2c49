import { describeMultiplex } from '@pglock/testing'
import { describe } from 'vitest'
import adapter, { postgresJs, refused } from './adapter.ts'

describe.skipIf(refused)(`over postgres.js ${postgresJs.version}`, () => describeMultiplex(adapter))
