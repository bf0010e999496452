/**
 * Pruning of in-memory maps keyed by peer or task, so that what a node keeps
 * follows what is alive rather than everything it ever saw.
 */

/** Deletes the entries of `map` whose time is `maxAgeMs` or more before `now`; returns how many. */
export function dropOlderThan<K> (map: Map<K, number>, now: number, maxAgeMs: number): number {
  let n = 0
  for (const [k, at] of map) {
    if (now - at < maxAgeMs) continue
    map.delete(k)
    n++
  }
  return n
}

/** Deletes the entries of `map` that `keep` rejects; returns how many. */
export function dropUnless<K, V> (map: Map<K, V>, keep: (key: K, value: V) => boolean): number {
  let n = 0
  for (const [k, v] of map) {
    if (keep(k, v)) continue
    map.delete(k)
    n++
  }
  return n
}
