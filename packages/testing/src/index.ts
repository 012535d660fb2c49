export type { AdapterUnderTest, Capabilities, LockFunctions, Opened, OpenOptions } from './adapter.ts'
export { describeBadInput } from './bad-input.ts'
export { abortedWithin, Bench, type BenchHandle, type BenchOpenOptions, SOAK, scaled, settleWithin } from './bench.ts'
export { describePgBouncer } from './bouncer.ts'
export { describeAbort } from './conformance/abort.ts'
export { describeExclusion } from './conformance/exclusion.ts'
export { describeFencing } from './conformance/fencing.ts'
export { describeHandles } from './conformance/handles.ts'
export { aborted, sleep } from './conformance/helpers.ts'
export { describeHolders } from './conformance/holders.ts'
export { describeKeys } from './conformance/keys.ts'
export { describeLoad } from './conformance/load.ts'
export { describeLoss } from './conformance/loss.ts'
export { describeOneConnection } from './conformance/one-connection.ts'
export { describePoolWait } from './conformance/pool-wait.ts'
export { describeRoundTrips } from './conformance/round-trips.ts'
export { describeTimeouts } from './conformance/timeouts.ts'
export { describeTracing } from './conformance/tracing.ts'
export { describeTransactionScope } from './conformance/transaction-scope.ts'
export { describeConformance } from './conformance.ts'
export { type EmbeddedPostgres, type EmbeddedPostgresOptions, startEmbeddedPostgres } from './database.ts'
export { describeFailover } from './failover.ts'
export { FaultProxy, type ProxiedConnection } from './fault-proxy.ts'
export { describeFaults, FAULT_ROUNDS, FaultTally } from './faults.ts'
export { describeLossPoints, LOSS_TRIALS } from './loss-points.ts'
export { describeModel, MODEL_RUNS } from './model.ts'
export {
  describeMultiplex,
  MULTIPLEX_CYCLES,
  MULTIPLEX_KEYS,
  MULTIPLEX_PROCESSES,
  MULTIPLEX_RACE_ROUNDS,
  multiplexedAdapter,
} from './multiplex.ts'
export { type BackendRow, type LockRow, Observer } from './observer.ts'
export { type PgBouncer, type PgBouncerOptions, startPgBouncer } from './pgbouncer.ts'
export { CYCLES, describeProcesses, PROCESSES } from './processes.ts'
export { describeRaces, holdUntilReleased, RACE_ROUNDS } from './races.ts'
export { describeReliability } from './reliability.ts'
export {
  type ReplicaServer,
  type ReplicatedPostgres,
  type ReplicatedPostgresOptions,
  type ReplicationMode,
  startReplicatedPostgres,
} from './replication.ts'
export { describeRestart, RESTARTS } from './restart.ts'
