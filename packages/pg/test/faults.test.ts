import { describeFaults } from '@pglock/testing'
import adapter from './adapter.ts'

describeFaults(adapter)
