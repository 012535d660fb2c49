/** A packed workspace package: its directory, its package.json and the tarball `pnpm pack` wrote. */
export interface Packed {
  readonly dir: string
  readonly manifest: { readonly name: string; readonly peerDependencies?: Readonly<Record<string, string>> }
  readonly tarball: string
}

/** The repository root. */
export declare const root: string
/** Runs a command synchronously and returns its stdout; throws with `stdout`/`stderr` on failure. */
export declare function run(command: string, args: readonly string[], options?: { readonly cwd?: string }): string
/** The directories of the workspace packages that are published (not `private`). */
export declare function publicPackages(): string[]
/** The published packages that are not driver adapters, each with the names it must export. */
export declare const notAdapters: ReadonlyMap<string, readonly string[]>
/** Runs `pnpm pack` in each directory, writing the tarballs to `destination`. */
export declare function packPackages(dirs: readonly string[], destination: string): Packed[]
/** Creates `app` and installs the tarballs, their peers, TypeScript 5, `@types/node` 20 and `extra` into it. */
export declare function installPacked(app: string, packed: readonly Packed[], extra?: readonly string[]): string
