#!/usr/bin/env node
// Builds polycall's native addon from the Rust sources shipped in the package, for this machine,
// and puts it where the loader looks first: `polycall.<platform>-<arch>[-<abi>].node` in the
// package root. Needs Rust 1.95 or newer (https://rustup.rs) and network access to crates.io.
//
//   npx polycall-build            build now (what ERR_POLYCALL_NATIVE_UNAVAILABLE asks for)
//   npx polycall-build --if-missing
//                                 build only when no addon loads (a clone's `prepare`)
//   npx polycall-build --if-stale build when the local build is missing or older than the sources
//                                 (a clone's `pretest`)
//   POLYCALL_SKIP_BUILD=1         never build (the loader then reports what is missing)
//   CARGO_TARGET_DIR=...          where cargo works; by default target/ in the package root, removed
//                                 after a build outside a git checkout
//
// Installing polycall never runs this: it has no install script.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const require = createRequire(join(root, 'package.json'))
const log = (msg) => console.error(`polycall-build: ${msg}`)
const args = process.argv.slice(2)

if (args.includes('--help') || args.includes('-h')) {
  console.log(`usage: polycall-build [--if-missing | --if-stale]

Builds polycall's native addon for this machine from the Rust sources in the package
(${root}) and writes ${'polycall.<platform>-<arch>[-<abi>].node'} next to its package.json.
Needs Rust 1.95 or newer (https://rustup.rs).

  --if-missing  build only when no prebuilt or local addon loads
  --if-stale    build when the local build is missing or older than the Rust sources`)
  process.exit(0)
}
const unknown = args.filter((a) => a !== '--if-missing' && a !== '--if-stale')
if (unknown.length > 0) {
  log(`unknown option ${unknown[0]} (see polycall-build --help)`)
  process.exit(2)
}

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

/** Where an addon already loads from, in the loader's order, or undefined. */
function loadable() {
  const override = process.env.POLYCALL_NATIVE_PATH
  if (override && loads(override)) return `POLYCALL_NATIVE_PATH (${override})`
  if (existsSync(localBuild) && loads(localBuild)) return localBuild
  try {
    const pkg = JSON.parse(readFileSync(require.resolve(`polycall-${triple}/package.json`), 'utf8'))
    const own = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
    if (pkg.version === own.version && loads(`polycall-${triple}`)) return `the package polycall-${triple}`
  } catch {}
  const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`)
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).filter((f) => f.endsWith('.node'))) if (loads(join(dir, f))) return join(dir, f)
  }
  return undefined
}

function newestSource(dir) {
  let newest = 0
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name)
    newest = Math.max(newest, entry.isDirectory() ? newestSource(p) : statSync(p).mtimeMs)
  }
  return newest
}

function stale() {
  if (!existsSync(localBuild)) return true
  const built = statSync(localBuild).mtimeMs
  const crates = join(root, 'crates')
  const sources = existsSync(crates) ? readdirSync(crates).map((c) => join(crates, c, 'src')).filter(existsSync) : []
  const manifests = [join(root, 'Cargo.toml'), join(root, 'Cargo.lock')].filter(existsSync)
  return sources.some((d) => newestSource(d) > built) || manifests.some((m) => statSync(m).mtimeMs > built)
}

function build() {
  if (!existsSync(join(root, 'crates', 'polycall-napi', 'Cargo.toml'))) {
    log(`this copy of polycall has no Rust sources (crates/) to build the ${triple} addon from.`)
    process.exit(1)
  }
  const cargo = process.env.CARGO ?? 'cargo'
  const probe = spawnSync(cargo, ['--version'], { encoding: 'utf8' })
  if (probe.status !== 0) {
    log(`building the ${triple} addon needs Rust 1.95 or newer, and cargo was not found on PATH. Install it from https://rustup.rs, then run npx polycall-build again.`)
    process.exit(1)
  }
  const inCheckout = existsSync(join(root, '.git'))
  const targetDir = process.env.CARGO_TARGET_DIR ?? join(root, 'target')
  log(`building the native addon for ${triple} with ${probe.stdout.trim()} (release profile; a few minutes)...`)
  const r = spawnSync(cargo, ['build', '--release', '--locked', '-p', 'polycall-napi', '--manifest-path', join(root, 'Cargo.toml')], {
    stdio: 'inherit',
    cwd: root,
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  })
  if (r.status !== 0) {
    log('cargo build failed; see the output above.')
    process.exit(r.status ?? 1)
  }
  const lib = process.platform === 'win32' ? 'polycall_napi.dll' : process.platform === 'darwin' ? 'libpolycall_napi.dylib' : 'libpolycall_napi.so'
  copyFileSync(join(targetDir, 'release', lib), localBuild)
  if (!inCheckout && process.env.CARGO_TARGET_DIR === undefined) rmSync(targetDir, { recursive: true, force: true })
  if (!loads(localBuild)) {
    log(`built ${localBuild}, but it does not load in this Node.js (${process.version}).`)
    process.exit(1)
  }
  log(`built ${localBuild}`)
}

if (process.env.POLYCALL_SKIP_BUILD) process.exit(0)
if (args.includes('--if-stale')) {
  if (stale()) build()
} else if (args.includes('--if-missing')) {
  const found = loadable()
  if (!found) build()
} else {
  build()
}
