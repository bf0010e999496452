/**
 * A throwaway OpenSSH server for launch tests: its own host key, one
 * authorized client key the test made, public-key login only, listening on
 * one address inside a namespace of the netns harness. `ensureSshd` installs
 * Debian's openssh-server when it is missing (without starting the system's
 * service) or says why it cannot.
 */
import { execFile, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { waitFor } from '../../src/util/wait.ts'
import { tail } from './cli.ts'
import type { NetHost, NetNetwork } from './netns.ts'

const run = promisify(execFile)

export const SSHD = '/usr/sbin/sshd'
const SFTP_SERVER = '/usr/lib/openssh/sftp-server'

/** The path of sshd, installing openssh-server with apt-get if needed; a string reason when it cannot be had. */
export async function ensureSshd (): Promise<{ sshd: string } | string> {
  if (existsSync(SSHD)) return { sshd: SSHD }
  if (process.getuid?.() !== 0) return 'sshd is not installed and installing openssh-server needs root'
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  const install = async (): Promise<void> => { await run('apt-get', ['install', '-y', '-q', 'openssh-server'], { env, timeout: 300_000, maxBuffer: 16 << 20 }) }
  try {
    await install().catch(async () => {
      await run('apt-get', ['update', '-q'], { env, timeout: 300_000, maxBuffer: 16 << 20 })
      await install()
    })
  } catch (err) {
    return `sshd is not installed and apt-get install openssh-server failed: ${(err as Error).message.split('\n').slice(-2).join(' ')}`
  }
  return existsSync(SSHD) ? { sshd: SSHD } : 'apt-get installed openssh-server but there is no /usr/sbin/sshd'
}

/** A client key pair (ed25519, no passphrase) in `dir`; returns the private key's path. */
export async function makeClientKey (dir: string): Promise<string> {
  const key = join(dir, 'client_ed25519')
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'meshwork-launch-test', '-f', key])
  return key
}

export interface TestSshd {
  host: NetHost
  proc: ChildProcess
  log: () => string
}

/**
 * Starts sshd on `host.ip:22` inside its namespace with a fresh host key and
 * `clientKey.pub` as the only authorized key, and waits (bounded) until a
 * login from `from` works.
 */
export async function startSshd (net: NetNetwork, host: NetHost, from: NetHost, dir: string, clientKey: string, knownHosts: string): Promise<TestSshd> {
  const d = join(dir, `sshd-${host.name}`)
  await mkdir(d, { recursive: true, mode: 0o700 })
  // privilege separation needs this directory (the service's unit makes it)
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 })
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, 'host_ed25519')])
  await run('cp', [`${clientKey}.pub`, join(d, 'authorized_keys')])
  await writeFile(join(d, 'sshd_config'), [
    `ListenAddress ${host.ip}:22`,
    `HostKey ${join(d, 'host_ed25519')}`,
    `AuthorizedKeysFile ${join(d, 'authorized_keys')}`,
    `PidFile ${join(d, 'sshd.pid')}`,
    'PermitRootLogin prohibit-password',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    'UsePAM no',
    // the temp dir's parents are not root-only; the test owns the files
    'StrictModes no',
    `Subsystem sftp ${SFTP_SERVER}`,
    ''
  ].join('\n'))
  const proc = net.spawn(host, SSHD, ['-D', '-e', '-f', join(d, 'sshd_config')])
  let log = ''
  proc.stdout?.on('data', (c: Buffer) => { log += c.toString() })
  proc.stderr?.on('data', (c: Buffer) => { log += c.toString() })
  const sshd: TestSshd = { host, proc, log: () => log }
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`sshd in ${host.ns} exited ${proc.exitCode}\n${tail('sshd', log)}`)
    try {
      await net.exec(from, 'ssh', ['-o', 'BatchMode=yes', '-o', 'ConnectTimeout=5', '-o', 'StrictHostKeyChecking=accept-new', '-o', `UserKnownHostsFile=${knownHosts}`, '-i', clientKey, `root@${host.ip}`, 'true'], { timeoutMs: 10_000 })
      return true
    } catch {
      return false
    }
  }, { timeoutMs: 30_000, intervalMs: 200, message: () => `no ssh login to ${host.ip} (${host.ns})\n${tail('sshd', log)}` })
  return sshd
}
