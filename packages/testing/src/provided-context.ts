import type {} from 'vitest'

declare module 'vitest' {
  /** What the global setup hands every test file: the URL of the test database. */
  export interface ProvidedContext {
    databaseUrl: string
  }
}
