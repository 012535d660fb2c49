import type { AcquireTraceContext, LostMessage, ReleaseTraceContext, RunTraceContext } from '@pglock/core'
import { describe, expectTypeOf, it } from 'vitest'
import type { AcquireTrace, LostMessage as LostSeen, ReleaseTrace, RunTrace } from '../src/channels.ts'

// The package types the channels' messages by the fields it reads, so that it works with any
// core that publishes them; here the core's own types must satisfy those local ones.
describe('opentelemetry: the tracing contract', () => {
  it("reads only fields the core's trace contexts have, with the core's types", () => {
    expectTypeOf<AcquireTraceContext>().toExtend<AcquireTrace>()
    expectTypeOf<RunTraceContext>().toExtend<RunTrace>()
    expectTypeOf<ReleaseTraceContext>().toExtend<ReleaseTrace>()
    expectTypeOf<LostMessage>().toExtend<LostSeen>()
  })
})
