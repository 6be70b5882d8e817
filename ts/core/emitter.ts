/** A small typed EventEmitter for lifecycle events. @packageDocumentation */
import { EventEmitter } from 'node:events'

/**
 * A `node:events` EventEmitter whose event names and listener arguments are checked by
 * TypeScript: `Events` maps each event name to its argument list. Every other EventEmitter
 * method (`listenerCount`, `removeAllListeners`, ...) is inherited unchanged.
 *
 * @typeParam Events - event name to argument tuple, e.g. `{ close: [] }`
 */
export class TypedEmitter<Events extends { [K in keyof Events]: unknown[] }> extends EventEmitter {
  /**
   * Adds a listener.
   *
   * @param event - the event name
   * @param listener - called with the event's arguments
   * @returns this emitter
   */
  override on<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    return super.on(event, listener as (...args: unknown[]) => void)
  }
  /**
   * Adds a listener called at most once.
   *
   * @param event - the event name
   * @param listener - called with the event's arguments
   * @returns this emitter
   */
  override once<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    return super.once(event, listener as (...args: unknown[]) => void)
  }
  /**
   * Removes a listener.
   *
   * @param event - the event name
   * @param listener - the listener given to `on` or `once`
   * @returns this emitter
   */
  override off<K extends keyof Events & string>(event: K, listener: (...args: Events[K]) => void): this {
    return super.off(event, listener as (...args: unknown[]) => void)
  }
  /**
   * Calls the event's listeners.
   *
   * @param event - the event name
   * @param args - the event's arguments
   * @returns whether the event had listeners
   */
  override emit<K extends keyof Events & string>(event: K, ...args: Events[K]): boolean {
    return super.emit(event, ...args)
  }
}
