/**
 * Module resolve hook (registered by register-packages.ts): the bench's own imports of a public
 * `@pglock/*` package resolve from the packed tree instead of the workspace link. Imports made
 * inside the packed packages then resolve there too, and peers fall through to bench/node_modules.
 */
let packed

/** @param {{ packedParent: string, benchSrc: string, names: string[] }} data */
export function initialize(data) {
  packed = data
}

export function resolve(specifier, context, nextResolve) {
  if (packed !== undefined && context.parentURL?.startsWith(packed.benchSrc) && specifier.startsWith('@pglock/')) {
    const name = specifier.split('/').slice(0, 2).join('/')
    if (packed.names.includes(name)) return nextResolve(specifier, { ...context, parentURL: packed.packedParent })
  }
  return nextResolve(specifier, context)
}
