/** A small typed EventEmitter for lifecycle events. @packageDocumentation */
import { EventEmitter } from 'node:events'

type Listener<A extends unknown[]> = (...args: A) => void

/** EventEmitter whose event names and argument lists are checked by TypeScript. */
export class TypedEmitter<Events extends { [K in keyof Events]: unknown[] }> extends EventEmitter {
  override on<K extends keyof Events & string>(event: K, listener: Listener<Events[K]>): this {
    return super.on(event, listener as (...args: unknown[]) => void)
  }
  override once<K extends keyof Events & string>(event: K, listener: Listener<Events[K]>): this {
    return super.once(event, listener as (...args: unknown[]) => void)
  }
  override off<K extends keyof Events & string>(event: K, listener: Listener<Events[K]>): this {
    return super.off(event, listener as (...args: unknown[]) => void)
  }
  override emit<K extends keyof Events & string>(event: K, ...args: Events[K]): boolean {
    return super.emit(event, ...args)
  }
}
