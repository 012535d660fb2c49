import { describeConformance } from '@pglock/testing'
import adapter from './node-postgres.adapter.ts'

describeConformance(adapter)
