export type { AdapterUnderTest, Capabilities, LockFunctions, Opened, OpenOptions } from './adapter.ts'
export { aborted, describeConformance, sleep } from './conformance.ts'
export { FaultProxy, type ProxiedConnection } from './fault-proxy.ts'
export { type BackendRow, type LockRow, Observer } from './observer.ts'
