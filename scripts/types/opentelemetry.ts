// A strict consumer of @pglock/opentelemetry, written the way its README shows. Type-checked only, never run.
import { metrics, trace } from '@opentelemetry/api'
import { type InstrumentPglockOptions, instrumentPglock, type PglockInstrumentation } from '@pglock/opentelemetry'

export function instrument(): PglockInstrumentation {
  const options: InstrumentPglockOptions = {
    tracerProvider: trace.getTracerProvider(),
    meterProvider: metrics.getMeterProvider(),
    captureKey: (key) => key.split(':')[0],
  }
  const instrumentation = instrumentPglock(options)
  instrumentPglock({ captureKey: true }).disable()
  instrumentPglock()
  return instrumentation
}
