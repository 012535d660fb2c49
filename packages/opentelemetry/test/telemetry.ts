import { context, type Span, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  type MetricData,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics'
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'

/**
 * The real OpenTelemetry SDK, wired to its in-memory exporters, with the Node context manager
 * registered globally as the Node SDK registers it: what a user's setup gives pglock's
 * instrumentation, minus the network.
 */
export interface Telemetry {
  readonly tracerProvider: BasicTracerProvider
  readonly meterProvider: MeterProvider
  /** Every span ended so far. */
  spans(): ReadableSpan[]
  /** One metric as the SDK aggregated it so far (cumulative), or undefined if it has no point yet. */
  metric(name: string): Promise<MetricData | undefined>
  /** Runs `fn` inside a fresh span of the test's own, which is returned with fn's value. */
  inSpan<T>(name: string, fn: (span: Span) => Promise<T>): Promise<T>
  shutdown(): Promise<void>
}

export function startTelemetry(): Telemetry {
  const contextManager = new AsyncLocalStorageContextManager().enable()
  context.setGlobalContextManager(contextManager)
  const spanExporter = new InMemorySpanExporter()
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spanExporter)] })
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 3_600_000 })
  const meterProvider = new MeterProvider({ readers: [reader] })
  const tracer = tracerProvider.getTracer('pglock-test')
  return {
    tracerProvider,
    meterProvider,
    spans: () => spanExporter.getFinishedSpans(),
    async metric(name) {
      await reader.forceFlush()
      const latest = metricExporter.getMetrics().at(-1)
      return latest?.scopeMetrics.flatMap((scope) => scope.metrics).find((metric) => metric.descriptor.name === name)
    },
    inSpan: (name, fn) =>
      tracer.startActiveSpan(name, async (span) => {
        try {
          return await fn(span)
        } finally {
          span.end()
        }
      }),
    async shutdown() {
      await Promise.all([tracerProvider.shutdown(), meterProvider.shutdown()])
      context.disable()
      trace.disable()
    },
  }
}
