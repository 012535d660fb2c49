import { describeConformance } from '@pglock/testing'
import adapter from './adapter.ts'

describeConformance(adapter)
