#!/usr/bin/env node
// Install step of the polycall package. Uses a prebuilt addon when one loads on this machine;
// otherwise builds the Rust addon from source with cargo (Rust stable from https://rustup.rs).
//
//   node scripts/install.mjs             build only when no prebuilt addon loads
//   node scripts/install.mjs --if-stale  also rebuild when crates/ sources are newer than the local build
//   POLYCALL_FORCE_BUILD=1               always build from source
//   POLYCALL_SKIP_BUILD=1                never build (the loader then reports what is missing)
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const require = createRequire(import.meta.url)
const log = (msg) => console.error(`polycall: ${msg}`)

function libc() {
  if (process.platform !== 'linux') return undefined
  try {
    if (readFileSync('/usr/bin/ldd', 'utf8').includes('musl')) return 'musl'
  } catch {}
  return process.report?.getReport()?.header?.glibcVersionRuntime ? 'gnu' : 'musl'
}
const abi = process.platform === 'win32' ? 'msvc' : libc()
const triple = [process.platform, process.arch, abi].filter(Boolean).join('-')
const localBuild = join(root, `polycall.${triple}.node`)

function loads(file) {
  try {
    require(file)
    return true
  } catch {
    return false
  }
}

function prebuiltLoads() {
  if (process.env.POLYCALL_NATIVE_PATH && loads(process.env.POLYCALL_NATIVE_PATH)) return 'POLYCALL_NATIVE_PATH'
  if (existsSync(localBuild) && loads(localBuild)) return localBuild
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`)
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).filter((f) => f.endsWith('.node'))) if (loads(join(dir, f))) return join(dir, f)
  }
  try {
    require.resolve(`polycall-${triple}`)
    if (loads(`polycall-${triple}`)) return `polycall-${triple}`
  } catch {}
  return undefined
}

function newestSource(dir) {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(p))
    else newest = Math.max(newest, statSync(p).mtimeMs)
  }
  return newest
}

function stale() {
  if (!existsSync(localBuild) || !existsSync(join(root, 'crates'))) return !existsSync(localBuild)
  const built = statSync(localBuild).mtimeMs
  const sources = [join(root, 'crates', 'polycall-core', 'src'), join(root, 'crates', 'polycall-napi', 'src')]
  return sources.some((d) => existsSync(d) && newestSource(d) > built) || statSync(join(root, 'Cargo.toml')).mtimeMs > built
}

function build() {
  if (!existsSync(join(root, 'crates', 'polycall-napi', 'Cargo.toml'))) {
    log(`no prebuilt addon for ${triple} and no Rust sources in this package to build from.`)
    process.exit(1)
  }
  const cargo = process.env.CARGO ?? 'cargo'
  const probe = spawnSync(cargo, ['--version'], { encoding: 'utf8' })
  if (probe.status !== 0) {
    log(`no prebuilt addon for ${triple}; building from source needs Rust stable (https://rustup.rs), and cargo was not found.`)
    process.exit(1)
  }
  log(`building the native addon for ${triple} with ${probe.stdout.trim()} (release profile)...`)
  const args = ['build', '--release', '--locked', '-p', 'polycall-napi', '--manifest-path', join(root, 'Cargo.toml')]
  const r = spawnSync(cargo, args, { stdio: 'inherit', cwd: root })
  if (r.status !== 0) {
    log('cargo build failed; see the output above.')
    process.exit(r.status ?? 1)
  }
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target')
  const lib =
    process.platform === 'win32'
      ? 'polycall_napi.dll'
      : process.platform === 'darwin'
        ? 'libpolycall_napi.dylib'
        : 'libpolycall_napi.so'
  copyFileSync(join(targetDir, 'release', lib), localBuild)
  log(`built ${localBuild}`)
}

if (process.env.POLYCALL_SKIP_BUILD) process.exit(0)
if (process.env.POLYCALL_FORCE_BUILD) build()
else if (process.argv.includes('--if-stale')) {
  if (stale()) build()
} else {
  const found = prebuiltLoads()
  if (found) log(`using the native addon at ${found}`)
  else build()
}
