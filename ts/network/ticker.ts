/**
 * Shared periodic timers. A timer per connection (heartbeats, idle checks) costs a Timeout
 * object and a timer-list entry for each of thousands of idle connections; one interval per
 * period that visits its members costs the same work and almost no memory.
 * Internal module: not exported from the package entry points.
 * @packageDocumentation
 */

/** Something visited on every tick of its period. */
export interface Ticking {
  tick(): void
}

interface Group {
  members: Set<Ticking>
  timer: NodeJS.Timeout
}

const groups = new Map<number, Group>()

/** Calls `member.tick()` every `period` ms until {@link stop} is called for it. */
export function every(period: number, member: Ticking): void {
  let group = groups.get(period)
  if (!group) {
    const members = new Set<Ticking>()
    const timer = setInterval(() => {
      for (const m of members) m.tick()
    }, period)
    timer.unref()
    group = { members, timer }
    groups.set(period, group)
  }
  group.members.add(member)
}

/** Stops visiting `member` on `period`. */
export function stop(period: number, member: Ticking): void {
  const group = groups.get(period)
  if (group && group.members.delete(member) && group.members.size === 0) {
    clearInterval(group.timer)
    groups.delete(period)
  }
}
