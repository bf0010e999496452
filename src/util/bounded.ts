/**
 * Bounded counters and sets for what peers can make a node remember (issue
 * 11, case 9): a peer with the swarm key can make up any number of keys
 * (generated peer ids, actors), so each such map keeps at most a fixed number
 * of entries, the least recently touched going first, and says how much it
 * forgot.
 */

/** What a bounded map forgot: how many keys it dropped, and the total of their counts. */
export interface Forgotten {
  keys: number
  total: number
}

/**
 * Adds `n` to `counts[key]`, keeping at most `max` keys. The key just counted
 * moves to the end (insertion order), so the first key is the one counted
 * least recently; when a new key would make `max + 1`, that one is dropped and
 * its count added to `forgotten`. Keys must not look like array indices (peer
 * ids and actor tags do not): those ignore insertion order.
 */
export function countBounded (counts: Record<string, number>, key: string, max: number, forgotten: Forgotten, n = 1): void {
  const had = counts[key]
  if (had !== undefined) delete counts[key]
  counts[key] = (had ?? 0) + n
  if (had !== undefined) return
  const keys = Object.keys(counts)
  for (let i = 0; i < keys.length - max; i++) {
    const old = keys[i] as string
    forgotten.keys++
    forgotten.total += counts[old] ?? 0
    delete counts[old]
  }
}

/**
 * Adds `key` to `set`, keeping at most `max` keys (the oldest go first).
 * Returns how many were dropped to make room.
 */
export function addBounded<K> (set: Set<K>, key: K, max: number): number {
  if (set.has(key)) return 0
  set.add(key)
  let dropped = 0
  for (const old of set) {
    if (set.size <= max) break
    set.delete(old)
    dropped++
  }
  return dropped
}

/**
 * Sets `map[key]` to `value`, keeping at most `max` keys: a new key past `max`
 * drops the oldest (insertion order). For caches of answers that never go stale.
 */
export function setBounded<K, V> (map: Map<K, V>, key: K, value: V, max: number): void {
  if (!map.has(key) && map.size >= max) {
    const oldest = map.keys().next()
    if (oldest.done !== true) map.delete(oldest.value)
  }
  map.set(key, value)
}
