/**
 * Refusing option keys nobody reads. A misspelt option (`maxInflight`, `timeOut`) would otherwise
 * be ignored without a word and the default would apply; like undici, polycall names the key.
 *
 * Every options type keeps its key list beside it, built with {@link optionKeys}: the compiler
 * rejects a list that misses a key of the type, so adding an option without listing it fails
 * to build instead of being refused at run time.
 *
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { invalidArgument } from './errors.js'

/**
 * @internal The keys of `T`, checked at compile time: the list must name every key of `T` (a
 * missing one shows up in the error as `missing`), and only keys of `T`.
 */
export function optionKeys<T extends object>() {
  return <const K extends readonly (keyof T & string)[]>(
    keys: K & ([Exclude<keyof T, K[number]>] extends [never] ? unknown : { missing: Exclude<keyof T, K[number]> }),
  ): ReadonlySet<string> => new Set<string>(keys)
}

/** Edit distance of two short strings, for a suggestion. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = row
  }
  return prev[b.length]!
}

/**
 * @internal Throws `ERR_POLYCALL_INVALID_ARGUMENT` naming the first own key of `options` that
 * `known` lacks, with the closest known key when one is near. Anything that is not a plain
 * object passes: the caller's own checks deal with it.
 */
export function checkOptionKeys(options: unknown, known: ReadonlySet<string>, what: string): void {
  if (options === null || typeof options !== 'object') return
  for (const key in options) {
    if (known.has(key) || !Object.hasOwn(options, key)) continue
    let best: string | undefined
    let bestDistance = 3
    for (const candidate of known) {
      const d = candidate.toLowerCase() === key.toLowerCase() ? 0 : distance(candidate, key)
      if (d < bestDistance) {
        best = candidate
        bestDistance = d
      }
    }
    throw invalidArgument(`unknown option ${JSON.stringify(key)} in ${what}${best ? ` (did you mean ${best}?)` : ''}`)
  }
}
