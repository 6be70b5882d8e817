#!/usr/bin/env node
// `--clean` empties dist/ before `tsc -p tsconfig.build.json`; without it, runs after tsc. Keeps the declarations a consumer can reach from the
// package's `exports` and removes the rest, so internal modules ship as JavaScript only; then
// checks what is left: every relative import resolves to a shipped declaration, and no native
// glue name (`Binding*`) or internal helper appears. `npm run pack:test` type-checks a consumer
// against the result with skipLibCheck off.
import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const dist = join(root, 'dist')
if (process.argv.includes('--clean')) {
  // Before tsc: no output of a removed or renamed source survives into the package.
  rmSync(dist, { recursive: true, force: true })
  process.exit(0)
}
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const problems = []

const entries = Object.values(pkg.exports)
  .map((e) => (typeof e === 'object' && e !== null ? e.types : undefined))
  .filter(Boolean)
  .map((t) => resolve(root, t))

/** Relative module specifiers of a declaration file (imports, re-exports, `import('...')` types). */
function specifiers(source) {
  const out = new Set()
  for (const m of source.matchAll(/(?:from|import)\s*\(?\s*['"](\.{1,2}\/[^'"]+)['"]/g)) out.add(m[1])
  return out
}

const reachable = new Set()
const queue = [...entries]
while (queue.length > 0) {
  const file = queue.pop()
  if (reachable.has(file)) continue
  if (!existsSync(file)) {
    problems.push(`missing declaration ${relative(root, file)}`)
    continue
  }
  reachable.add(file)
  const source = readFileSync(file, 'utf8')
  for (const spec of specifiers(source)) {
    const target = resolve(dirname(file), spec.replace(/\.js$/, '.d.ts'))
    if (!target.startsWith(dist)) problems.push(`${relative(root, file)} imports ${spec}, outside dist/`)
    else if (!existsSync(target)) problems.push(`${relative(root, file)} imports ${spec}, which has no declaration`)
    else queue.push(target)
  }
}

let removed = 0
const walk = (dir) => {
  for (const entry of readdirSync(dir)) {
    const p = join(dir, entry)
    if (statSync(p).isDirectory()) walk(p)
    else if (entry.endsWith('.d.ts') && !reachable.has(p)) {
      rmSync(p)
      rmSync(`${p}.map`, { force: true })
      removed++
    }
  }
}
walk(dist)

for (const file of reachable) {
  const source = readFileSync(file, 'utf8')
  const where = relative(root, file)
  for (const m of source.matchAll(/\bBinding[A-Z]\w*/g)) problems.push(`${where} names the native glue type ${m[0]}`)
  if (/binding\.c?js|native\.js/.test(source)) problems.push(`${where} refers to the native addon module`)
}

if (problems.length > 0) {
  console.error(`dist-types: ${problems.length} problem(s) in the emitted declarations:\n  ${problems.join('\n  ')}`)
  process.exit(1)
}
console.log(`dist-types: ${reachable.size} declaration files reachable from the package exports, ${removed} internal ones removed`)
