import { describeLossPoints, describeReliability } from '@pglock/testing'
import adapter from './postgres-js.adapter.ts'

describeReliability(adapter)
describeLossPoints(adapter)
