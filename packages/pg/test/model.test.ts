import { describeModel } from '@pglock/testing'
import adapter from './adapter.ts'

describeModel(adapter)
