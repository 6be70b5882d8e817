#!/usr/bin/env node
// Lays the built addons out the way a release ships them. Used by the release workflow and,
// with this machine's binary only, by `npm run pack:test`, so both put each binary in the same
// place.
//
// One source per binary:
//   - the npm registry release: the main package carries no binary; it lists the per-platform
//     packages (npm/<triple>/, one binary each) as optionalDependencies, and npm installs only
//     the one whose os/cpu/libc match;
//   - the offline release: one tarball (a GitHub release asset) with every binary under
//     prebuilds/<platform>-<arch>/ in prebuildify's layout, and no optionalDependencies, so it
//     installs without the registry.
//
//   node scripts/release-layout.mjs platform-packages <artifacts> [--root DIR] [--all]
//       copy artifacts/**/polycall.<triple>.node into npm/<triple>/ (--all: every target must be present)
//   node scripts/release-layout.mjs registry-manifest [--root DIR]
//       the published package.json: every npm/<triple> package in optionalDependencies at the
//       package's version, and none of the development fields (scripts, devDependencies, tool
//       settings), so npm finds no lifecycle script to run or warn about
//   node scripts/release-layout.mjs prebuilds <artifacts> [--root DIR] [--all]
//       copy artifacts/**/polycall.<triple>.node into prebuilds/<platform>-<arch>/node.napi[.glibc|.musl].node
//   node scripts/release-layout.mjs offline-manifest [--root DIR]
//       the offline tarball's package.json: no optionalDependencies (it carries its binaries
//       itself) and none of the development fields
//
// --root is the package directory to change (default: this repository). The manifest commands
// are meant for a staged copy: the unpacked `npm pack` tarball that is then published or packed.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const repo = fileURLToPath(new URL('..', import.meta.url))
const argv = process.argv.slice(2)
const flag = (name) => {
  const i = argv.indexOf(name)
  if (i < 0) return undefined
  const value = argv[i + 1]
  argv.splice(i, 2)
  return value
}
const root = resolve(flag('--root') ?? repo)
const all = argv.includes('--all')
const [command, source] = argv.filter((a) => a !== '--all')
const fail = (msg) => {
  console.error(`release-layout: ${msg}`)
  process.exit(1)
}

const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'))
const writeJson = (file, value) => writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`)

/** A package.json without what only a clone uses: lifecycle scripts above all. */
function stripDevelopment(pkg) {
  for (const key of ['scripts', 'devDependencies', 'ava', 'prettier', 'allowScripts']) delete pkg[key]
  return pkg
}

/** The per-platform packages, from npm/ (the source of truth for names, os, cpu and libc). */
function platforms() {
  const npmDir = join(repo, 'npm')
  return readdirSync(npmDir)
    .filter((d) => existsSync(join(npmDir, d, 'package.json')))
    .map((dir) => {
      const pkg = readJson(join(npmDir, dir, 'package.json'))
      return { dir, name: pkg.name, binary: pkg.main, os: pkg.os[0], cpu: pkg.cpu[0], libc: pkg.libc?.[0] }
    })
}

/** Every `polycall.<triple>.node` below `dir`, by file name. */
function findBinaries(dir) {
  const found = new Map()
  const walk = (d) => {
    for (const entry of readdirSync(d)) {
      const p = join(d, entry)
      if (statSync(p).isDirectory()) walk(p)
      else if (/^polycall\..+\.node$/.test(entry)) found.set(entry, p)
    }
  }
  walk(dir)
  return found
}

function binariesFor(dir) {
  if (!dir || !existsSync(dir)) fail(`no artifacts directory ${dir ?? '(missing argument)'}`)
  const found = findBinaries(dir)
  const targets = platforms()
  const missing = targets.filter((t) => !found.has(t.binary))
  if (all && missing.length > 0) fail(`missing binaries: ${missing.map((t) => t.binary).join(', ')}`)
  const present = targets.filter((t) => found.has(t.binary)).map((t) => ({ ...t, file: found.get(t.binary) }))
  if (present.length === 0) fail(`no polycall.<triple>.node file under ${dir}`)
  return present
}

switch (command) {
  case 'platform-packages': {
    const version = readJson(join(root, 'package.json')).version
    for (const t of binariesFor(source)) {
      const out = join(root, 'npm', t.dir)
      mkdirSync(out, { recursive: true })
      for (const f of ['package.json', 'README.md']) {
        const to = join(out, f)
        if (!existsSync(to) && existsSync(join(repo, 'npm', t.dir, f))) copyFileSync(join(repo, 'npm', t.dir, f), to)
      }
      const pkgFile = join(out, 'package.json')
      const pkg = readJson(pkgFile)
      if (pkg.version !== version) fail(`${t.name} is at ${pkg.version}, polycall at ${version}: run npx napi version`)
      copyFileSync(t.file, join(out, t.binary))
      console.log(`npm/${t.dir}/${t.binary}`)
    }
    break
  }
  case 'registry-manifest': {
    const file = join(root, 'package.json')
    const pkg = stripDevelopment(readJson(file))
    pkg.optionalDependencies = Object.fromEntries(platforms().map((t) => [t.name, pkg.version]))
    writeJson(file, pkg)
    console.log(`optionalDependencies: ${Object.keys(pkg.optionalDependencies).join(', ')} at ${pkg.version}`)
    break
  }
  case 'prebuilds': {
    for (const t of binariesFor(source)) {
      const tags = ['node', 'napi', t.libc].filter(Boolean).join('.')
      const out = join(root, 'prebuilds', `${t.os}-${t.cpu}`)
      mkdirSync(out, { recursive: true })
      copyFileSync(t.file, join(out, `${tags}.node`))
      console.log(`prebuilds/${t.os}-${t.cpu}/${tags}.node`)
    }
    break
  }
  case 'offline-manifest': {
    const file = join(root, 'package.json')
    const pkg = stripDevelopment(readJson(file))
    delete pkg.optionalDependencies
    writeJson(file, pkg)
    console.log('no optionalDependencies: the binaries are in prebuilds/')
    break
  }
  default:
    fail(`unknown command ${command ?? '(none)'}; see the header of scripts/release-layout.mjs`)
}
