import { describeConformance } from '@pglock/testing'
import adapter from './postgres-js-dialect.ts'

describeConformance(adapter)
