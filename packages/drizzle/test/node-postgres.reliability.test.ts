import { describeLossPoints, describeReliability } from '@pglock/testing'
import adapter from './node-postgres.adapter.ts'

describeReliability(adapter)
describeLossPoints(adapter)
