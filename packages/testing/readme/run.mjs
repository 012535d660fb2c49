/**
 * Runs one compiled README block: `node run.mjs <block.js> [<wrapper.js>]`, with `DATABASE_URL`
 * set to the examples' database. After the block's module has finished, it closes the
 * fragment's wrapper (a pool that cannot end because the block kept a client fails here), and
 * fails if any advisory lock is still held in that database: an example must leave none behind.
 * Then it exits, so that a pool the block left open does not keep the process alive.
 */
import { pathToFileURL } from 'node:url'
import pg from 'pg'

const [block, wrapper] = process.argv.slice(2)
const CLOSE_TIMEOUT_MS = 10_000

await import(pathToFileURL(block).href)

if (wrapper) {
  const { close } = await import(pathToFileURL(wrapper).href)
  let timer
  const late = new Promise((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(`the wrapper's close() did not finish within ${CLOSE_TIMEOUT_MS} ms: did the block leave a connection checked out?`),
        ),
      CLOSE_TIMEOUT_MS,
    )
  })
  await Promise.race([close(), late])
  clearTimeout(timer)
}

const client = new pg.Client({ connectionString: process.env.DATABASE_URL })
await client.connect()
const { rows } = await client.query(
  `SELECT l.pid, l.mode, l.granted, l.classid, l.objid, l.objsubid, a.query
     FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
)
await client.end()
if (rows.length > 0) {
  console.error(`the block finished with advisory locks still held or awaited in its database:\n${JSON.stringify(rows, null, 2)}`)
  process.exit(1)
}
process.exit(0)
