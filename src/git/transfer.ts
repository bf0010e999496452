/**
 * Git between peers: `/meshwork/git/2` moves a branch (or a commit) from one
 * node's repository to another's as a git pack over a libp2p stream, with no
 * git server. The pack streams through: the server's `git pack-objects` output
 * goes onto the stream as it is produced and the requester feeds it to
 * `git index-pack` as it arrives, so packing, the wire and indexing overlap.
 *
 * The frames and their JSON bodies are defined in src/protocol/git.ts; this
 * side of the wire lives in src/git/transfer/: `wire.ts` (defaults, error
 * codes, reading frames), `server.ts`, `fetch.ts` (the requester and clone)
 * and `quarantine.ts` (the repository side).
 *
 * The server resolves the want and the haves it actually has (one `git cat-file
 * --batch-check` and one exact `git for-each-ref`, side by side; the branch's
 * oid is fixed from then on) and streams `git pack-objects --revs --stdout
 * --thin` of `want ^haves` (a thin pack: deltas may use objects the haves
 * reach); an empty pack means the requester is up to date. Its repository is
 * never written to. The requester pipes DATA into `git index-pack --stdin
 * --fix-thin --strict` (what `git fetch` with `transfer.fsckObjects` runs)
 * writing into a quarantine directory in the git dir, while counting bytes
 * against its limit and hashing; after END and a matching size and hash it
 * checks that `oid` is there and connected (read from the pack when it holds
 * the commit whole, `transfer/pack-index.ts`; else `git rev-list --objects
 * <oid> --not --all` with the quarantine as an alternate), moves the pack into `objects/pack` and
 * only then updates `intoRef`. The quarantine is removed on every path, so a
 * failed transfer leaves neither refs nor objects behind.
 *
 * `/meshwork/git-handoff/1` (`transfer/handoff.ts`) is the other direction:
 * a node asks a peer to take a branch from it, and the peer fetches it as
 * above.
 */
export { GIT_PROTOCOL, GitFrame, MAX_CHUNK_BYTES, MAX_HAVES, WINDOW_BYTES, ACK_BYTES } from '../protocol/git.ts'
export { encodeFrame, encodeJsonFrame } from '../protocol/frame.ts'
export {
  DEFAULT_CHUNK_BYTES, DEFAULT_MAX_CONCURRENT_SERVES, DEFAULT_MAX_TRANSFER_BYTES, DEFAULT_TRANSFER_TIMEOUT_MS, GitTransferError,
  type GitStreams, type GitTransferErrorCode
} from './transfer/wire.ts'
export { serveGit, type GitServeStats, type GitServer, type ServeGitOptions } from './transfer/server.ts'
export { PACK_REUSE_MAX_BYTES } from './transfer/pack-reuse.ts'
export { cloneFromPeer, collectHaves, fetchFromPeer, type CloneFromPeerOptions, type FetchFromPeerOptions, type FetchResult, type FetchStep } from './transfer/fetch.ts'
export { removeStaleTransferTemps } from './transfer/quarantine.ts'
export { handOff, serveHandoffs, HandoffError, GIT_HANDOFF_PROTOCOL, DEFAULT_HANDOFF_TIMEOUT_MS, type HandoffRequest, type HandoffServer, type ServeHandoffsOptions } from './transfer/handoff.ts'
