/**
 * The only importer of the native addon. Finds it, loads it, and turns every native error
 * into a {@link PolyCallError}.
 *
 * Search order, first hit wins:
 *  1. `POLYCALL_NATIVE_PATH`: an explicit path to a `.node` file (an error if it does not load);
 *  2. a local build in the package root, `polycall.<platform>-<arch>[-<abi>].node`
 *     (what `npm run build` and the install script produce);
 *  3. `prebuilds/<platform>-<arch>/*.node` inside the package (prebuildify's layout);
 *  4. the napi-rs per-platform package (`polycall-<platform>-<arch>[-<abi>]`) through the
 *     generated `binding.cjs` loader.
 *
 * @internal
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

function libc(): 'gnu' | 'musl' | undefined {
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
function platformTriple(c: string | undefined): string {
  const abi = process.platform === 'win32' ? 'msvc' : c
  return [process.platform, process.arch, abi].filter(Boolean).join('-')
}

function prebuildCandidates(c: string | undefined): string[] {
  const dir = join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`)
  if (!existsSync(dir)) return []
  const files = readdirSync(dir).filter((f) => f.endsWith('.node'))
  const otherLibc = c === 'musl' ? 'glibc' : 'musl'
  // prebuildify tags: `<name>.napi.glibc.node`, `<name>.musl.node`, ...; skip the other libc.
  const usable = files.filter((f) => !f.split('.').includes(otherLibc))
  const score = (f: string) => (c && f.split('.').includes(c === 'gnu' ? 'glibc' : 'musl') ? 0 : 1)
  return usable.sort((a, b) => score(a) - score(b)).map((f) => join(dir, f))
}

type NativeBinding = typeof Binding

function load(): NativeBinding {
  const override = process.env['POLYCALL_NATIVE_PATH']
  if (override) {
    try {
      return require(override) as NativeBinding
    } catch (cause) {
      throw new PolyCallError(
        ErrorCode.NATIVE_UNAVAILABLE,
        `POLYCALL_NATIVE_PATH=${override} could not be loaded: ${(cause as Error).message}`,
        { cause },
      )
    }
  }
  const c = libc()
  const triple = platformTriple(c)
  const tried: string[] = []
  const candidates = [join(PACKAGE_ROOT, `polycall.${triple}.node`), ...prebuildCandidates(c)]
  for (const file of candidates) {
    if (!existsSync(file)) continue
    try {
      return require(file) as NativeBinding
    } catch (e) {
      tried.push(`${file}: ${(e as Error).message}`)
    }
  }
  try {
    return require('../binding.cjs') as NativeBinding
  } catch (e) {
    tried.push(`polycall-${triple}: ${(e as Error).message.split('\n')[0]}`)
  }
  throw new PolyCallError(
    ErrorCode.NATIVE_UNAVAILABLE,
    `No polycall native addon for ${process.platform}/${process.arch}${c ? ` (${c === 'gnu' ? 'glibc' : 'musl'})` : ''}. ` +
      `Looked for POLYCALL_NATIVE_PATH, ${join(PACKAGE_ROOT, `polycall.${triple}.node`)}, ` +
      `prebuilds/${process.platform}-${process.arch}/ and the package polycall-${triple}.` +
      (tried.length ? ` Load errors: ${tried.join('; ')}.` : '') +
      ` To build from source, install Rust stable (https://rustup.rs) and run \`npm run build\` in the package` +
      ` (or \`npm rebuild polycall\`, approving its install script if your npm asks).`,
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
