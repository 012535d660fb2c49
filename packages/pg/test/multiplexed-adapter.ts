import { fileURLToPath } from 'node:url'
import { multiplexedAdapter } from '@pglock/testing'
import adapter from './adapter.ts'

/** This adapter's multiplexed locks (`multiplex(pool)`) under the conformance suite. */
export default multiplexedAdapter(adapter, fileURLToPath(import.meta.url))
