/** Child-process helpers for the specs that run real servers, stores and balancers. */
import type { ExecutionContext } from 'ava'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

/** A free TCP port on 127.0.0.1 (the kernel picks it; callers retry if it is taken before use). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** The path of a fixture script under __test__/fixtures. */
export function fixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))
}

/** A TypeScript fixture run with `node --import tsx`, whose stdout is JSON lines. */
export class FixtureProcess {
  readonly child: ChildProcess
  readonly messages: Record<string, unknown>[] = []
  readonly #waiters: { match: (m: Record<string, unknown>) => boolean; resolve: (m: Record<string, unknown>) => void }[] = []
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  stderr = ''

  constructor(t: ExecutionContext, script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, ['--import', 'tsx', fixture(script), ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    })
    this.exited = once(this.child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }))
    this.child.stderr!.on('data', (c: Buffer) => {
      this.stderr += String(c)
    })
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let m: Record<string, unknown>
      try {
        m = JSON.parse(line) as Record<string, unknown>
      } catch {
        return
      }
      this.messages.push(m)
      for (const w of [...this.#waiters]) {
        if (w.match(m)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1)
          w.resolve(m)
        }
      }
    })
    t.teardown(async () => {
      if (this.child.exitCode === null && this.child.signalCode === null) {
        // Politely first (a cluster primary drains its workers and exits, which also writes
        // its coverage), then for sure. Workers exit when their primary's channel closes.
        this.child.kill('SIGTERM')
        const killer = setTimeout(() => this.child.kill('SIGKILL'), 5000)
        await this.exited
        clearTimeout(killer)
      }
    })
  }

  /** The first message (already received or to come) matching `match`, bounded by `timeout`. */
  next(match: (m: Record<string, unknown>) => boolean, timeout = 20_000, from = 0): Promise<Record<string, unknown>> {
    const seen = this.messages.slice(from).find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter)
        if (i >= 0) this.#waiters.splice(i, 1)
        reject(new Error(`no matching message within ${timeout} ms; got ${JSON.stringify(this.messages)}; stderr ${this.stderr}`))
      }, timeout)
      const waiter = {
        match,
        resolve: (m: Record<string, unknown>) => {
          clearTimeout(timer)
          resolve(m)
        },
      }
      this.#waiters.push(waiter)
      this.exited.then(
        () => {
          // Messages are read line by line; give the last ones a chance before failing.
          setImmediate(() => {
            const i = this.#waiters.indexOf(waiter)
            if (i < 0) return
            this.#waiters.splice(i, 1)
            clearTimeout(timer)
            reject(new Error(`the fixture exited; got ${JSON.stringify(this.messages)}; stderr ${this.stderr}`))
          })
        },
        () => {},
      )
    })
  }

  /** The first message of a type. */
  event(type: string, timeout?: number, from?: number): Promise<Record<string, unknown>> {
    return this.next((m) => m.event === type, timeout, from)
  }

  /** Writes one JSON line to the fixture's stdin. */
  send(message: Record<string, unknown>): void {
    this.child.stdin!.write(`${JSON.stringify(message)}\n`)
  }
}
