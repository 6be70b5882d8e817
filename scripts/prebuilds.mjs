#!/usr/bin/env node
// Copies the per-target addons downloaded by CI (artifacts/bindings-<target>/polycall.<triple>.node)
// into prebuilds/<platform>-<arch>/ in prebuildify's layout, so one npm tarball carries every
// platform and installs offline. The loader (ts/native.ts) picks the file matching this libc.
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs'
import { join } from 'node:path'

const from = process.argv[2] ?? 'artifacts'
const root = new URL('..', import.meta.url).pathname
let copied = 0
for (const dir of readdirSync(from)) {
  for (const file of readdirSync(join(from, dir))) {
    const m = /^polycall\.(\w+)-(\w+)(?:-(\w+))?\.node$/.exec(file)
    if (!m) continue
    const [, platform, arch, abi] = m
    const tags = ['napi', abi === 'gnu' ? 'glibc' : abi === 'musl' ? 'musl' : undefined].filter(Boolean).join('.')
    const out = join(root, 'prebuilds', `${platform}-${arch}`)
    if (!existsSync(out)) mkdirSync(out, { recursive: true })
    copyFileSync(join(from, dir, file), join(out, `polycall.${tags}.node`))
    copied++
  }
}
console.log(`copied ${copied} addons into prebuilds/`)
