export type { AdapterUnderTest, Capabilities, LockFunctions, Opened, OpenOptions } from './adapter.ts'
export { aborted, describeConformance, sleep } from './conformance.ts'
export { type BackendRow, type LockRow, Observer } from './observer.ts'
