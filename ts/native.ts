/**
 * The only importer of the native addon. Finds it, loads it, and turns every native error
 * into a {@link PolyCallError}.
 *
 * Search order, first hit wins:
 *  1. `POLYCALL_NATIVE_PATH`: an explicit path to a `.node` file (an error if it does not load,
 *     never a silent fallback);
 *  2. a local build in the package root, `polycall.<platform>-<arch>[-<abi>].node` (what
 *     `npm run build:native` in a clone and `npx polycall-build` in an installed package write);
 *  3. the per-platform package `polycall-<platform>-<arch>[-<abi>]` that npm installs from the
 *     package's `optionalDependencies` (the registry release), at the same version;
 *  4. `prebuilds/<platform>-<arch>/*.node` inside the package (prebuildify's layout and
 *     node-gyp-build's tags, e.g. `node.napi.glibc.node`: the single-tarball offline release).
 *
 * Loading never runs a build and never touches the network; building from source is the
 * explicit step the error names.
 *
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type * as Binding from '../binding.cjs'
import { ErrorCode, PolyCallError } from './core/errors.js'

/** @internal The package root (ts/ in development, dist/ when installed: both one level down). */
export const PACKAGE_ROOT = fileURLToPath(new URL('..', import.meta.url))

const require = createRequire(import.meta.url)

type NativeBinding = typeof Binding
type Libc = 'gnu' | 'musl' | undefined

function libc(): Libc {
  if (process.platform !== 'linux') return undefined
  try {
    if (readFileSync('/usr/bin/ldd', 'utf8').includes('musl')) return 'musl'
  } catch {
    // no ldd: ask the process report instead
  }
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header
  return header?.glibcVersionRuntime ? 'gnu' : 'musl'
}

/** napi-rs's platform triple for this process, e.g. `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`. */
function platformTriple(c: Libc): string {
  const abi = process.platform === 'win32' ? 'msvc' : c
  return [process.platform, process.arch, abi].filter(Boolean).join('-')
}

/** The version of this package, which a per-platform package must match exactly. */
function ownVersion(): string | undefined {
  try {
    return (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: string }).version
  } catch {
    return undefined
  }
}

/**
 * The `.node` files of `prebuilds/<platform>-<arch>/` this process can load, most specific
 * first. node-gyp-build's tag rules: a `glibc`/`musl` tag must match this libc, an `abi<N>` tag
 * this Node's module ABI unless `napi` is also present, and a runtime tag other than `node`
 * rules the file out.
 */
function prebuildCandidates(c: Libc): string[] {
  const dir = join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`)
  if (!existsSync(dir)) return []
  const wantLibc = c === 'musl' ? 'musl' : c === 'gnu' ? 'glibc' : undefined
  const usable: { file: string; specificity: number }[] = []
  for (const file of readdirSync(dir)) {
    const tags = file.split('.')
    if (tags.pop() !== 'node') continue
    let specificity = 0
    let ok = true
    for (const tag of tags) {
      if (tag === 'glibc' || tag === 'musl') ok &&= tag === wantLibc
      else if (tag === 'electron' || tag === 'node-webkit') ok = false
      else if (/^abi\d+$/.test(tag)) ok &&= tags.includes('napi') || tag === `abi${process.versions.modules}`
      else if (tag !== 'node' && tag !== 'napi' && !/^(uv|armv)\d+$/.test(tag)) continue
      specificity++
    }
    if (ok) usable.push({ file: join(dir, file), specificity })
  }
  return usable.sort((a, b) => b.specificity - a.specificity).map((u) => u.file)
}

const firstLine = (e: unknown): string => String((e as Error)?.message ?? e).split('\n')[0]!

function load(): NativeBinding {
  const override = process.env['POLYCALL_NATIVE_PATH']
  if (override) {
    try {
      return require(override) as NativeBinding
    } catch (cause) {
      throw new PolyCallError(
        ErrorCode.NATIVE_UNAVAILABLE,
        `POLYCALL_NATIVE_PATH=${override} could not be loaded: ${firstLine(cause)}`,
        { cause },
      )
    }
  }
  const c = libc()
  const triple = platformTriple(c)
  const tried: string[] = []

  const local = join(PACKAGE_ROOT, `polycall.${triple}.node`)
  if (existsSync(local)) {
    try {
      return require(local) as NativeBinding
    } catch (e) {
      tried.push(`${local}: ${firstLine(e)}`)
    }
  } else tried.push(`${local}: not built`)

  const pkg = `polycall-${triple}`
  let pkgJson: string | undefined
  try {
    pkgJson = require.resolve(`${pkg}/package.json`)
  } catch {
    tried.push(`the package ${pkg}: not installed`)
  }
  if (pkgJson) {
    const version = ownVersion()
    const found = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version?: string }).version
    if (version !== undefined && found !== version) {
      tried.push(`the package ${pkg}: version ${String(found)}, polycall is ${version}`)
    } else {
      try {
        return require(pkg) as NativeBinding
      } catch (e) {
        tried.push(`the package ${pkg}: ${firstLine(e)}`)
      }
    }
  }

  const prebuilds = prebuildCandidates(c)
  for (const file of prebuilds) {
    try {
      return require(file) as NativeBinding
    } catch (e) {
      tried.push(`${file}: ${firstLine(e)}`)
    }
  }
  if (prebuilds.length === 0) tried.push(`prebuilds/${process.platform}-${process.arch}/: no file for this platform`)

  const libcName = c === 'gnu' ? ' (glibc)' : c === 'musl' ? ' (musl)' : ''
  throw new PolyCallError(
    ErrorCode.NATIVE_UNAVAILABLE,
    `No polycall native addon loads on ${process.platform}/${process.arch}${libcName}. Tried: ${tried.join('; ')}. ` +
      `To build it from source, install Rust 1.95 or newer (https://rustup.rs) and run \`npx polycall-build\` ` +
      `(or \`node ${join(PACKAGE_ROOT, 'scripts', 'build-native.mjs')}\`); ` +
      `or point POLYCALL_NATIVE_PATH at a polycall .node file.`,
  )
}

/** @internal The loaded addon. Call it only through the wrappers in ts/. */
export const native: NativeBinding = load()

/**
 * @internal Converts an error thrown by the addon into a PolyCallError. napi puts the core's
 * identifier in `code` (`ERR_POLYCALL_*`); anything else means a type reached the addon
 * unchecked, which is a polycall bug.
 */
export function fromNative(e: unknown): PolyCallError {
  if (e instanceof PolyCallError) return e
  const err = e as { code?: unknown; message?: unknown }
  const code = typeof err?.code === 'string' && err.code.startsWith('ERR_POLYCALL_') ? err.code : ErrorCode.INTERNAL
  return new PolyCallError(code, String(err?.message ?? e), { cause: e })
}
