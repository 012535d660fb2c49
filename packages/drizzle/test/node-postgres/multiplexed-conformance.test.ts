import { describeConformance } from '@pglock/testing'
import adapter from './multiplexed-adapter.ts'

describeConformance(adapter)
