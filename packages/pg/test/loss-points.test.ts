import { describeLossPoints } from '@pglock/testing'
import adapter from './adapter.ts'

describeLossPoints(adapter)
