/**
 * Preloaded by the bench's scripts (`--import`): packs the public packages when their build
 * changed, and points the bench's `@pglock/*` imports at the tarballs, unless `--workspace`.
 */
import { register } from 'node:module'
import { pathToFileURL } from 'node:url'
import { benchPackages } from './packages.js'

const packages = benchPackages()
if (packages.packedRoot !== undefined) {
  register('./packed-resolve.mjs', import.meta.url, {
    data: {
      packedParent: pathToFileURL(`${packages.packedRoot}/package.json`).href,
      benchSrc: new URL('./', import.meta.url).href,
      names: packages.names,
    },
  })
}
