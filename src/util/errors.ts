/**
 * Errors with a stable `name` (equal to the class name) so callers and tests can
 * match on `.name`. `UsageError` maps to exit code 2 in the CLI, every other
 * error to exit code 1.
 */

/** Bad flags, unreadable inputs, invalid plans: the user must change something. */
export class UsageError extends Error {
  static readonly code = 2
  override name = 'UsageError'
}

/** A swarm key file that is missing, unreadable or not in pnet format. */
export class SwarmKeyError extends UsageError {
  override name = 'SwarmKeyError'
}

/** A join token that cannot be decoded. */
export class JoinTokenError extends UsageError {
  override name = 'JoinTokenError'
}

/** Persisted board data that cannot be loaded: the node refuses to start rather than lose it. */
export class BoardCorruptError extends Error {
  override name = 'BoardCorruptError'
}

/** No mesh peer answered within the client timeout. */
export class MeshUnreachableError extends Error {
  override name = 'MeshUnreachableError'
}

/** Another process already uses this data directory. */
export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError'
}

/**
 * Something took longer than it may. A task's run is aborted with one as the
 * signal's reason when its timeout passes, which makes the attempt a failure
 * rather than a release; check with `instanceof`, never by the message.
 */
export class TimeoutError extends Error {
  override name = 'TimeoutError'
}

/** Whether `signal` was aborted because a time bound passed (its reason is a `TimeoutError`). */
export function abortedByTimeout (signal: AbortSignal): boolean {
  return signal.aborted && signal.reason instanceof TimeoutError
}

/** Turns anything thrown into an Error (catch clauses receive `unknown`). */
export function toError (err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err))
}

/**
 * The mesh main the board names is on no live node this one can reach (its
 * leader died right after publishing it, say): a run cannot start from it. No
 * fault of the task: the run goes back without counting anything.
 */
export class MainUnavailableError extends Error {
  override name = 'MainUnavailableError'
}
