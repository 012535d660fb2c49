const CONNECTION = `Connection:
  --url URL, else DATABASE_URL, else the libpq variables node-postgres reads
  (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, ...).`

/**
 * The `--help` text of each command, and of `pglock` itself under `''`.
 *
 * @example
 * ```ts
 * console.log(HELP.run)
 * ```
 */
export const HELP: Readonly<Record<'' | 'run' | 'hash' | 'holders', string>> = {
  '': `Usage: pglock <command> [options]

Postgres advisory locks from the shell.

Commands:
  run KEY [options] -- COMMAND [ARGS...]  run COMMAND while holding the lock KEY
  holders [--key KEY]... [--json]         list the sessions holding or awaiting advisory locks
  hash KEY...                             print the lock id Postgres sees for KEY

Options:
  -h, --help     show this help; "pglock <command> --help" for a command's
  -V, --version  print pglock's version

${CONNECTION}

Docs: https://github.com/pglock/pglock/tree/main/packages/cli#readme`,

  run: `Usage: pglock run KEY [options] -- COMMAND [ARGS...]

Runs COMMAND while a session of its own holds the advisory lock KEY, then releases it.
Every process that locks KEY on the same database, through pglock in any language, waits.

Options:
  -t, --timeout DURATION     give up after waiting DURATION, connecting included (exit 124);
                             0 tries the lock once, however long connecting takes; default: wait
                             as long as it takes
  -n, --try                  do not wait: exit 75 at once when another session holds KEY
  -s, --shared               shared mode: excludes only exclusive holders, not other shared ones
      --keep-alive DURATION  while COMMAND runs, probe the connection this often, so that one that
                             died silently counts as a lost lock; default: off
      --kill-after DURATION  when the lock is lost: SIGTERM COMMAND, then SIGKILL it after DURATION
                             (default 10s)
      --key-hash HASH        how KEY becomes a lock id: sha1-int64 (default, as Python
                             postgresql-lock >= 0.1.6) or postgres-lock-0.1 (Python 0.1.x ids)
      --url URL              the database to lock on
  -q, --quiet                say nothing when the lock is busy or the wait times out
  -h, --help                 show this help

Durations: 500ms, 30s, 1.5s, 2m, 1h, or a number of milliseconds.

SIGINT, SIGTERM, SIGHUP and SIGQUIT are passed on to COMMAND; the lock is released after COMMAND
exits. If the lock is lost while COMMAND runs (its connection failed or was terminated), COMMAND
gets SIGTERM, then SIGKILL after --kill-after, and pglock exits 74.

Exit status:
  COMMAND's own, or 128+N when signal N killed it (or arrived while waiting for the lock)
  2    usage error
  69   cannot connect to Postgres, or it refused the lock statement
  74   the lock was lost while COMMAND ran
  75   --try: another session holds KEY
  124  --timeout elapsed before the lock was granted, or while connecting; with --timeout 0: KEY
       was busy
  126  COMMAND cannot be run
  127  COMMAND not found

${CONNECTION}

Example (cron):
  */5 * * * * pglock run --try --quiet billing:sync -- /usr/local/bin/sync-invoices`,

  hash: `Usage: pglock hash KEY... [options]

Prints, one per line, the int64 lock id Postgres sees for each string KEY: the number pglock,
and Python postgresql-lock, pass to pg_advisory_lock(bigint). Needs no database.

Options:
      --key-hash HASH  sha1-int64 (default, as Python postgresql-lock >= 0.1.6) or
                       postgres-lock-0.1 (the ids of Python postgres-lock 0.1.x)
      --json           a JSON array of an object per KEY, with the pg_locks columns (classid,
                       objid, objsubid) where the lock shows
  -h, --help           show this help

Example:
  $ pglock hash shared-identifier
  -464685171814670893`,

  holders: `Usage: pglock holders [options]

Lists the sessions that hold or await an advisory lock in the current database, from pg_locks and
pg_stat_activity in one query. A role that is neither a superuser nor a member of pg_read_all_stats
sees other roles' sessions without their client address, timings or state.

Options:
  -k, --key KEY        only this lock (a string key, hashed by --key-hash); repeatable
      --key-hash HASH  sha1-int64 (default) or postgres-lock-0.1; give both to match a key
                       under either
      --json           a JSON array instead of a table (ids and times as strings)
      --url URL        the database to look at
  -h, --help           show this help

${CONNECTION}`,
}
