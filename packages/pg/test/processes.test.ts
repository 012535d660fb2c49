import { describeProcesses } from '@pglock/testing'
import adapter from './adapter.ts'

describeProcesses(adapter)
