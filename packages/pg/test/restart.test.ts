import { describeRestart } from '@pglock/testing'
import adapter from './adapter.ts'

describeRestart(adapter)
