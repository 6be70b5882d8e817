// The documentation against the code: every error code has exactly one row in docs/errors.md,
// and every guide the README promises exists. (The snippets of README.md and docs/*.md are
// type-checked against the packed declarations by npm run pack:test.)
import test from 'ava'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ErrorCode } from '../ts/index.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const read = (file: string) => readFileSync(`${root}${file}`, 'utf8')

test('docs/errors.md has one table row for every error code, and no code twice', (t) => {
  const rows = read('docs/errors.md')
    .split('\n')
    .filter((line) => line.startsWith('| `ERR_POLYCALL_'))
    .map((line) => /^\| `(ERR_POLYCALL_\w+)`/.exec(line)![1]!)
  const counts = new Map<string, number>()
  for (const code of rows) counts.set(code, (counts.get(code) ?? 0) + 1)
  for (const code of Object.values(ErrorCode)) {
    // The PCR1 truncation codes share a row.
    if (code === ErrorCode.PCR1_TRUNCATED_PAYLOAD) continue
    t.is(counts.get(code), 1, `${code} rows`)
  }
  t.deepEqual([...counts].filter(([, n]) => n > 1), [], 'a code listed twice')
  t.deepEqual(rows.filter((code) => !Object.values(ErrorCode).includes(code as never)), [], 'a row for a code that does not exist')
})

test('the guides linked from the README exist', (t) => {
  const guides = ['getting-started', 'routing', 'state-machines', 'testing', 'interop', 'protocol', 'protocol-extensions', 'errors']
  const readme = read('README.md')
  for (const g of guides) {
    t.true(readme.includes(`(docs/${g}.md)`), `README links docs/${g}.md`)
    t.true(existsSync(`${root}docs/${g}.md`), `docs/${g}.md exists`)
  }
  t.true(readme.includes('(docs/limits.md)'), 'README links the limits table')
})

test('every cargo-fuzz target is run by npm run fuzz (with its seeds), the weekly workflow and docs/fuzzing.md', async (t) => {
  const crate = [...read('crates/polycall-core/fuzz/Cargo.toml').matchAll(/^\[\[bin\]\]\s*\nname = "([a-z0-9_]+)"/gm)].map((m) => m[1]!)
  t.true(crate.length > 0)
  const script = (await import(`${root}scripts/fuzz.mjs`)) as { TARGETS: string[]; seeds: () => Record<string, Record<string, Uint8Array>> }
  t.deepEqual([...script.TARGETS].sort(), [...crate].sort(), 'scripts/fuzz.mjs TARGETS')
  const seeds = script.seeds()
  for (const target of crate) t.truthy(seeds[target], `seeds for ${target}`)
  const workflow = read('.github/workflows/fuzz.yml')
  const fuzzing = read('docs/fuzzing.md')
  for (const target of crate) {
    t.regex(workflow, new RegExp(`\\b${target}\\b`), `fuzz.yml runs ${target}`)
    t.true(fuzzing.includes(`| \`${target}\` |`), `docs/fuzzing.md describes ${target}`)
  }
})
