import { describeConformance } from '@pglock/testing'
import adapter from './postgres-js.adapter.ts'

describeConformance(adapter)
