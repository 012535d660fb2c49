import { describeConformance } from '@pglock/testing'
import adapter from './pg-dialect.ts'

describeConformance(adapter)
