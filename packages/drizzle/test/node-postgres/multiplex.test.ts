import { describeMultiplex } from '@pglock/testing'
import adapter from './adapter.ts'

describeMultiplex(adapter)
