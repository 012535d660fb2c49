import { describeReliability } from '@pglock/testing'
import adapter from './adapter.ts'

describeReliability(adapter)
