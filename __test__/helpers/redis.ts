/**
 * A real redis-server for the specs: started on a free loopback port with a temporary
 * directory, no persistence, stopped (and the directory removed) in teardown.
 */
import type { ExecutionContext } from 'ava'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './processes.js'

/** The redis-server binary on PATH, or undefined (decided once, when a spec file loads). */
export const redisServerPath: string | undefined = (() => {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' })
  return r.status === 0 && /Redis server/.test(r.stdout) ? 'redis-server' : undefined
})()

/** Why Redis specs skip, when they do. */
export const redisSkipReason = 'redis-server is not installed (apt-get install redis-server; .ci/run installs it)'

export interface RedisInstance {
  port: number
  url: string
  child: ChildProcess
}

/**
 * Starts redis-server on 127.0.0.1 and a free port; resolves once it accepts connections.
 * Teardown stops it with SIGTERM (SIGKILL if it lingers) and removes its directory.
 */
export async function startRedis(t: ExecutionContext): Promise<RedisInstance> {
  const dir = await mkdtemp(join(tmpdir(), 'polycall-redis-'))
  for (let attempt = 0; ; attempt++) {
    const port = await freePort()
    const child = spawn(
      redisServerPath ?? 'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'yes'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let out = ''
    const ready = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000)
      const onData = (chunk: Buffer) => {
        out += String(chunk)
        if (/Ready to accept connections/.test(out)) {
          clearTimeout(timer)
          resolve(true)
        }
      }
      child.stdout!.on('data', onData)
      child.stderr!.on('data', onData)
      child.once('exit', () => {
        clearTimeout(timer)
        resolve(false)
      })
    })
    if (ready) {
      t.teardown(async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = once(child, 'exit')
          child.kill('SIGTERM')
          const killer = setTimeout(() => child.kill('SIGKILL'), 5000)
          await exited
          clearTimeout(killer)
        }
        await rm(dir, { recursive: true, force: true })
      })
      return { port, url: `redis://127.0.0.1:${port}`, child }
    }
    if (child.exitCode === null) child.kill('SIGKILL')
    // The port was taken between probing and binding: try another, a few times.
    if (attempt >= 3 || !/Address already in use/.test(out)) {
      await rm(dir, { recursive: true, force: true })
      throw new Error(`redis-server did not start: ${out}`)
    }
  }
}
