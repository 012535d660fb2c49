import { describePgBouncer } from '@pglock/testing'
import adapter from './adapter.ts'

describePgBouncer(adapter)
