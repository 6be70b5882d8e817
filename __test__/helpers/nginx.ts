/**
 * A real nginx as a TCP load balancer for the specs: a `stream` config written to a temporary
 * directory (upstream of loopback ports, `listen 127.0.0.1:<free port>`, pid, logs and prefix
 * in that directory, `daemon off`), started as `nginx -p <dir> -c <dir>/nginx.conf`, reloaded
 * with SIGHUP, stopped in teardown. Debian builds the stream module as a dynamic module
 * (libnginx-mod-stream); its `load_module` line is added when `nginx -V` says so.
 */
import type { ExecutionContext } from 'ava'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './processes.js'

interface NginxBuild {
  /** The `load_module` path of the stream module, or undefined when it is built in. */
  streamModule: string | undefined
  version: string
}

/** What `nginx -V` says about stream support, or why nginx cannot be used. */
function probe(): NginxBuild | string {
  const r = spawnSync('nginx', ['-V'], { encoding: 'utf8' })
  if (r.error || r.status !== 0) return 'nginx is not installed (apt-get install nginx libnginx-mod-stream; .ci/run installs them)'
  const text = `${r.stdout}${r.stderr}`
  const version = /nginx version: nginx\/(\S+)/.exec(text)?.[1] ?? 'unknown'
  if (/--with-stream(\s|$)/.test(text)) return { streamModule: undefined, version }
  if (!/--with-stream=dynamic/.test(text)) return `nginx ${version} has no stream module`
  const modules = /--modules-path=(\S+)/.exec(text)?.[1] ?? '/usr/lib/nginx/modules'
  const so = join(modules, 'ngx_stream_module.so')
  if (!existsSync(so)) return `nginx ${version} builds stream as a module, but ${so} is missing (apt-get install libnginx-mod-stream)`
  return { streamModule: so, version }
}

const build = probe()

/** The nginx build, when nginx with the stream module is usable here (decided when a spec file loads). */
export const nginxBuild: NginxBuild | undefined = typeof build === 'string' ? undefined : build
/** Why nginx specs skip, when they do. */
export const nginxSkipReason: string = typeof build === 'string' ? build : ''

/** Options of {@link startNginx}. */
export interface NginxOptions {
  /** Upstream ports on 127.0.0.1. */
  upstreams: number[]
  /** `least_conn`, `hash $remote_addr:$remote_port`, ... as the upstream's first line; empty for round robin. */
  balance?: string
  /** Parameters of each `server` line (passive health checks). @defaultValue 'max_fails=1 fail_timeout=10s' */
  serverParameters?: string
  /** `proxy_connect_timeout`. @defaultValue '1s' */
  connectTimeout?: string
  /** `proxy_timeout`: idle time before nginx closes a proxied connection. @defaultValue '10m' */
  proxyTimeout?: string
  /** `worker_processes`. @defaultValue 1 */
  workers?: number
  /** Extra lines of the main context (`worker_priority -5;`, ...). */
  main?: string[]
  /** Extra lines of the `server` block (`proxy_buffer_size 64k;`, ...). */
  server?: string[]
}

export interface Nginx {
  /** The port nginx listens on (127.0.0.1). */
  port: number
  /** The temporary prefix directory. */
  dir: string
  child: ChildProcess
  /** Rewrites the config with these upstreams and reloads (SIGHUP); resolves once new workers run. */
  reload(upstreams: number[]): Promise<void>
  /** The error log so far. */
  log(): Promise<string>
  /** Stops nginx now (SIGTERM: proxied connections are closed); teardown does it otherwise. */
  stop(): Promise<void>
}

function config(dir: string, port: number, options: NginxOptions): string {
  const b = build as NginxBuild
  const params = options.serverParameters ?? 'max_fails=1 fail_timeout=10s'
  const root = process.getuid?.() === 0
  return [
    b.streamModule ? `load_module ${b.streamModule};` : '',
    'daemon off;',
    'master_process on;',
    `worker_processes ${options.workers ?? 1};`,
    // As root, workers would switch to the build's default user; stay the invoking user instead.
    root ? 'user root;' : '',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'error.log')} notice;`,
    ...(options.main ?? []),
    'events { worker_connections 1024; }',
    'stream {',
    '  upstream polycall {',
    options.balance ? `    ${options.balance};` : '',
    ...options.upstreams.map((p) => `    server 127.0.0.1:${p} ${params};`),
    '  }',
    '  server {',
    `    listen 127.0.0.1:${port}${(options.workers ?? 1) > 1 ? ' reuseport' : ''};`,
    '    proxy_pass polycall;',
    `    proxy_connect_timeout ${options.connectTimeout ?? '1s'};`,
    `    proxy_timeout ${options.proxyTimeout ?? '10m'};`,
    '    proxy_next_upstream on;',
    '    proxy_next_upstream_tries 3;',
    ...(options.server ?? []).map((l) => `    ${l}`),
    '  }',
    '}',
    '',
  ]
    .filter((l) => l !== '')
    .join('\n')
}

async function until(check: () => Promise<boolean>, timeout: number, what: string): Promise<void> {
  const end = Date.now() + timeout
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`nginx: ${what} within ${timeout} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Starts nginx in front of `options.upstreams`; teardown stops it and removes its directory. */
export async function startNginx(t: ExecutionContext, options: NginxOptions): Promise<Nginx> {
  if (!nginxBuild) throw new Error(nginxSkipReason)
  const dir = await mkdtemp(join(tmpdir(), 'polycall-nginx-'))
  const conf = join(dir, 'nginx.conf')
  const errorLog = join(dir, 'error.log')
  const pidFile = join(dir, 'nginx.pid')
  const log = () => readFile(errorLog, 'utf8').catch(() => '')
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    await writeFile(conf, config(dir, port, options))
    await writeFile(errorLog, '')
    // -e: the log used before the config is read; -p: prefix for relative paths.
    const child = spawn('nginx', ['-e', errorLog, '-p', `${dir}/`, '-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr!.on('data', (c: Buffer) => (stderr += String(c)))
    const exited = once(child, 'exit')
    let gone = false
    void exited.then(() => (gone = true))
    try {
      await until(async () => gone || (existsSync(pidFile) && /start worker process/.test(await log())), 10_000, 'workers running')
    } catch (e) {
      child.kill('SIGKILL')
      await exited
      await rm(dir, { recursive: true, force: true })
      throw e
    }
    if (gone) {
      const text = `${stderr}${await log()}`
      if (attempt < 3 && /Address already in use/.test(text)) continue
      await rm(dir, { recursive: true, force: true })
      throw new Error(`nginx exited at start: ${text}`)
    }
    const stop = async () => {
      if (!gone) {
        child.kill('SIGTERM')
        const killer = setTimeout(() => child.kill('SIGKILL'), 5000)
        await exited
        clearTimeout(killer)
      }
    }
    t.teardown(async () => {
      await stop()
      await rm(dir, { recursive: true, force: true })
    })
    return {
      port,
      dir,
      child,
      log,
      stop,
      async reload(upstreams: number[]) {
        // Done once new workers run and the old ones stopped accepting (they log "gracefully
        // shutting down" as they close their listening sockets; their open connections go on).
        const count = async (re: RegExp) => ((await log()).match(re) ?? []).length
        const started = await count(/start worker process /g)
        const retired = await count(/gracefully shutting down/g)
        await writeFile(conf, config(dir, port, { ...options, upstreams }))
        child.kill('SIGHUP')
        await until(
          async () => (await count(/start worker process /g)) > started && (await count(/gracefully shutting down/g)) > retired,
          10_000,
          'reloaded',
        )
      },
    }
  }
}
