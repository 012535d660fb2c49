#!/usr/bin/env node
import { main } from './main.js'

// a reader that goes away (`pglock holders | head`) is not an error
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error
})

const code = await main(process.argv.slice(2))
process.exit(code)
