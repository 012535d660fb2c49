import { describeBadInput } from '@pglock/testing'
import adapter from './adapter.ts'

describeBadInput(adapter)
