import { describeRaces } from '@pglock/testing'
import adapter from './adapter.ts'

describeRaces(adapter)
