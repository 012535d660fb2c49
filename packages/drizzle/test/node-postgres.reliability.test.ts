import { describeReliability } from '@pglock/testing'
import adapter from './node-postgres.adapter.ts'

describeReliability(adapter)
