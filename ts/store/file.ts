/**
 * A snapshot store in a directory: one JSON file per id holding the id, the version and the
 * snapshot. Writes are atomic (a temporary file in the same directory, fsync, rename, fsync of
 * the directory) and compare-and-set across processes: each write or delete holds a lock file
 * (created with O_EXCL) for the few system calls between reading the version and renaming.
 * @packageDocumentation
 */
import { createHash, randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { mkdir, open, readFile, rename, stat, unlink, link, type FileHandle } from 'node:fs/promises'
import { abortedError, checkTimeout, deadlineOf, now, timeoutError, type CallOptions } from '../core/abort.js'
import { ErrorCode, PolyCallError, invalidArgument } from '../core/errors.js'
import type { StateMachineSnapshot } from '../state/machine.js'
import {
  checkCall,
  checkId,
  checkIfVersion,
  checkMaxBytes,
  conflict,
  parseStored,
  serialise,
  storeFailed,
  tooLarge,
  type SaveOptions,
  type SnapshotStore,
  type SnapshotStoreOptions,
  type StoredSnapshot,
} from './store.js'

/** Options of {@link FileSnapshotStore}. */
export interface FileSnapshotStoreOptions extends SnapshotStoreOptions {
  /** The directory (created on first use). Every process sharing records must use the same one. */
  dir: string
  /**
   * Longest wait for another writer's lock on the same id before a save or delete rejects with
   * `ERR_POLYCALL_TIMEOUT` (a call's own `timeout` or `signal` can end it sooner). @defaultValue 5000
   */
  lockTimeout?: number | undefined
  /**
   * A lock file older than this is taken to be left by a crashed writer and removed. Locks are
   * held for a few system calls, so this is far above any real holder's time; a lock whose
   * holder is a process of this host that no longer exists is removed at once. @defaultValue 30000
   */
  staleLockTimeout?: number | undefined
  /** fsync files and the directory, so a committed write survives a power loss. @defaultValue true */
  fsync?: boolean | undefined
}

const FORMAT = 'polycall.snapshot-store/1'
const HOST = hostname()
/** Longest file name we produce (most file systems allow 255 bytes). */
const MAX_NAME = 200
/** What a record file may hold beyond the snapshot itself: the format, id and version. */
const ENVELOPE_BYTES = 1024

/**
 * The file name of an id: lowercase letters, digits, `-` and `_` stand for themselves, every
 * other byte is `%XX` (uppercase hex). Lowercase-only literals keep distinct ids distinct on
 * case-insensitive file systems. Ids whose name would be too long use a hash of the id.
 */
function fileStem(id: string): string {
  let out = ''
  for (const byte of Buffer.from(id)) {
    const c = String.fromCharCode(byte)
    out += /[a-z0-9_-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out.length <= MAX_NAME ? out : `%23${createHash('sha256').update(id).digest('hex')}`
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code
}

function delay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(t)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const t = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return errno(e) === 'EPERM'
  }
}

interface Lock {
  path: string
  token: string
}

/**
 * Keeps each snapshot in a JSON file of a directory, for several processes of one host (or a
 * shared file system with working O_EXCL and rename, such as a local disk). Two processes
 * racing to save the same id with the same `ifVersion` never both succeed.
 *
 * @typeParam T - the snapshot type @defaultValue StateMachineSnapshot
 * @example
 * ```ts
 * const store = new FileSnapshotStore({ dir: '/var/lib/orders/state' })
 * const persisted = await resumeState(sm, store, 'order-42')
 * ```
 */
export class FileSnapshotStore<T = StateMachineSnapshot> implements SnapshotStore<T> {
  /** The directory records live in. */
  readonly dir: string
  readonly #maxBytes: number
  readonly #lockTimeout: number
  readonly #staleLockTimeout: number
  readonly #fsync: boolean
  #ready: Promise<void> | undefined
  /** Writers of this process queue here per id before they contend for the lock file. */
  readonly #local = new Map<string, Promise<void>>()

  /**
   * @param options - `dir`, `maxBytes`, `lockTimeout`, `staleLockTimeout`, `fsync`
   * @throws `ERR_POLYCALL_INVALID_ARGUMENT` for a bad option
   */
  constructor(options: FileSnapshotStoreOptions) {
    if (options === null || typeof options !== 'object') throw invalidArgument('FileSnapshotStore needs { dir }')
    if (typeof options.dir !== 'string' || options.dir.length === 0) throw invalidArgument('dir must be a non-empty path')
    this.dir = options.dir
    this.#maxBytes = checkMaxBytes(options.maxBytes)
    this.#lockTimeout = checkTimeout(options.lockTimeout, 'lockTimeout') ?? 5000
    this.#staleLockTimeout = checkTimeout(options.staleLockTimeout, 'staleLockTimeout') ?? 30_000
    if (options.fsync !== undefined && typeof options.fsync !== 'boolean') throw invalidArgument('fsync must be a boolean')
    this.#fsync = options.fsync ?? true
  }

  /** The path of the file holding `id`. */
  pathOf(id: string): string {
    return join(this.dir, `${fileStem(checkId(id))}.json`)
  }

  /** {@inheritDoc SnapshotStore.load} */
  async load(id: string, options?: CallOptions): Promise<StoredSnapshot<T> | undefined> {
    const path = this.pathOf(id)
    checkCall(options)
    const record = await this.#read(path, id)
    return record && { snapshot: record.snapshot as T, version: record.version }
  }

  /** {@inheritDoc SnapshotStore.save} */
  async save(id: string, snapshot: T, options: SaveOptions = {}): Promise<number> {
    const path = this.pathOf(id)
    checkCall(options)
    const ifVersion = checkIfVersion(options.ifVersion)
    const text = serialise(snapshot, this.#maxBytes)
    return this.#exclusive(id, options, async () => {
      const current = (await this.#read(path, id, false))?.version ?? 0
      if (ifVersion !== undefined && ifVersion !== current) throw conflict(id, ifVersion, current)
      const version = current + 1
      // The snapshot text is spliced in as serialised: no second stringify of a large object.
      await this.#writeAtomic(path, `{"format":"${FORMAT}","id":${JSON.stringify(id)},"version":${version},"snapshot":${text}}\n`)
      return version
    })
  }

  /** {@inheritDoc SnapshotStore.delete} */
  async delete(id: string, options: SaveOptions = {}): Promise<boolean> {
    const path = this.pathOf(id)
    checkCall(options)
    const ifVersion = checkIfVersion(options.ifVersion)
    return this.#exclusive(id, options, async () => {
      const current = (await this.#read(path, id, false))?.version
      if (current === undefined) return false
      if (ifVersion !== undefined && ifVersion !== current) throw conflict(id, ifVersion, current)
      try {
        await unlink(path)
      } catch (e) {
        if (errno(e) === 'ENOENT') return false
        throw storeFailed(e, `cannot remove ${path}`)
      }
      await this.#syncDir()
      return true
    })
  }

  #mkdir(): Promise<void> {
    this.#ready ??= mkdir(this.dir, { recursive: true }).then(
      () => undefined,
      (e: unknown) => {
        this.#ready = undefined
        throw storeFailed(e, `cannot create ${this.dir}`)
      },
    )
    return this.#ready
  }

  /** Reads and checks a record; `bounded` refuses records over maxBytes (a writer only needs the version). */
  async #read(path: string, id: string, bounded = true): Promise<{ snapshot: unknown; version: number } | undefined> {
    let text: string
    try {
      if (bounded) {
        const { size } = await stat(path)
        tooLarge(size - ENVELOPE_BYTES, this.#maxBytes)
      }
      text = await readFile(path, 'utf8')
    } catch (e) {
      if (errno(e) === 'ENOENT') return undefined
      throw storeFailed(e, `cannot read ${path}`)
    }
    const record = parseStored(text, id) as { format?: unknown; id?: unknown; version?: unknown; snapshot?: unknown } | null
    const version = record?.version
    if (
      record === null ||
      typeof record !== 'object' ||
      record.format !== FORMAT ||
      record.id !== id ||
      typeof version !== 'number' ||
      !Number.isSafeInteger(version) ||
      version < 1 ||
      !('snapshot' in record)
    ) {
      throw new PolyCallError(ErrorCode.STORE_FAILED, `${path} is not a snapshot record of ${JSON.stringify(id)}`)
    }
    return { snapshot: record.snapshot, version }
  }

  async #writeAtomic(path: string, text: string): Promise<void> {
    const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`
    let handle: FileHandle | undefined
    try {
      handle = await open(tmp, 'wx', 0o644)
      await handle.writeFile(text, 'utf8')
      if (this.#fsync) await handle.sync()
      await handle.close()
      handle = undefined
      await rename(tmp, path)
    } catch (e) {
      await handle?.close().catch(() => {})
      await unlink(tmp).catch(() => {})
      throw storeFailed(e, `cannot write ${path}`)
    }
    await this.#syncDir()
  }

  async #syncDir(): Promise<void> {
    if (!this.#fsync) return
    let handle: FileHandle | undefined
    try {
      handle = await open(this.dir, 'r')
      await handle.sync()
    } catch {
      // Some platforms (Windows) cannot open or fsync a directory; the rename is still atomic.
    } finally {
      await handle?.close().catch(() => {})
    }
  }

  /** Runs `work` holding this process's queue for `id` and the id's lock file. */
  async #exclusive<R>(id: string, options: CallOptions, work: () => Promise<R>): Promise<R> {
    await this.#mkdir()
    const previous = this.#local.get(id) ?? Promise.resolve()
    let release!: () => void
    const mine = new Promise<void>((r) => (release = r))
    const tail = previous.then(() => mine)
    this.#local.set(id, tail)
    try {
      await previous
      const lock = await this.#lock(id, options)
      try {
        return await work()
      } finally {
        await this.#unlock(lock)
      }
    } finally {
      release()
      if (this.#local.get(id) === tail) this.#local.delete(id)
    }
  }

  async #lock(id: string, options: CallOptions): Promise<Lock> {
    const path = join(this.dir, `${fileStem(id)}.lock`)
    const token = `${HOST} ${process.pid} ${randomBytes(8).toString('hex')}`
    const ownTimeout = checkTimeout(options.timeout)
    const end = Math.min(deadlineOf(this.#lockTimeout), ownTimeout === undefined ? Infinity : deadlineOf(ownTimeout))
    const signal = options.signal
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw abortedError(signal)
      try {
        const handle = await open(path, 'wx', 0o644)
        try {
          await handle.writeFile(token, 'utf8')
        } finally {
          await handle.close()
        }
        return { path, token }
      } catch (e) {
        if (errno(e) !== 'EEXIST') throw storeFailed(e, `cannot create the lock ${path}`)
      }
      await this.#breakStale(path)
      const left = end - now()
      if (left <= 0) {
        const ms = Math.min(this.#lockTimeout, ownTimeout ?? Infinity)
        throw timeoutError(ms, `waiting for the lock of ${JSON.stringify(id)}`)
      }
      // Short, growing, jittered waits: holders keep the lock for a few system calls.
      await delay(Math.min(left, Math.min(25, 2 ** Math.min(attempt, 5)) * (0.5 + Math.random())), signal)
    }
  }

  /** Removes a lock whose holder is gone: a dead process of this host, or older than staleLockTimeout. */
  async #breakStale(path: string): Promise<void> {
    let content: string
    let mtimeMs: number
    try {
      ;[content, { mtimeMs }] = await Promise.all([readFile(path, 'utf8'), stat(path)])
    } catch {
      return // released meanwhile, or not readable yet
    }
    const [host, pidText] = content.split(' ')
    const pid = Number(pidText)
    const dead = host === HOST && Number.isInteger(pid) && pid > 0 && pid !== process.pid && !alive(pid)
    // An empty lock is one being written right now; only its age can make it stale.
    if (!dead && Date.now() - mtimeMs <= this.#staleLockTimeout) return
    // Move it aside first: of several processes breaking the same lock, one moves it, and a
    // fresh lock taken meanwhile is put back if it was moved by mistake.
    const aside = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.stale`
    try {
      await rename(path, aside)
    } catch {
      return
    }
    try {
      const moved = await readFile(aside, 'utf8')
      if (moved !== content) await link(aside, path).catch(() => {})
    } finally {
      await unlink(aside).catch(() => {})
    }
  }

  async #unlock(lock: Lock): Promise<void> {
    try {
      // Only our own lock: if it was broken as stale, another writer may hold the path now.
      if ((await readFile(lock.path, 'utf8')) === lock.token) await unlink(lock.path)
    } catch {
      // already gone
    }
  }
}
