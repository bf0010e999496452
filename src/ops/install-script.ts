/**
 * The script `meshwork launch` runs on a host (with `sh -s`, over ssh) once the
 * tarball is there: Node, meshwork, the 0600 token file, the unit or the
 * nohup start, then the node's facts. It speaks to the launcher in lines:
 * `MESHWORK_STEP text` (progress), `MESHWORK_FAIL reason` (then exit 1), and
 * at the end `MESHWORK_NODE`, `MESHWORK_HEALTH` and `MESHWORK_RESULT <node.json>`.
 */
import { shq, type HostPlan } from './remote.ts'

/** How long the health check waits for a joining node's first peer. @default 20 s */
export const HEALTH_PEER_WAIT_S = 20

/** Everything the install script needs; secrets come inside the script, on ssh's stdin. */
export interface InstallParams {
  plan: HostPlan
  /** Remote directory holding `meshwork.tgz`; removed when the script ends. */
  stage: string
  /** Node.js version of npm's `node` package, installed when the host has no Node >= 22.18. */
  nodeVersion: string
  /** The meshwork version the tarball holds (checked after the install). */
  version: string
  /** `meshwork node` arguments (after `node`). */
  args: string[]
  /** The join token, or (first node of a new mesh) the swarm key file's text. */
  secret: { kind: 'join', text: string } | { kind: 'swarm-key', text: string }
  /** systemd mode: the unit to install. */
  unit: string
  /** Where the node serves metrics (for the health line), or null. */
  metrics: string | null
  /** How long the node may take to write node.json. */
  startTimeoutS: number
}

/** A heredoc that writes `text` to `file` with mode 0600 (the text never appears on a command line). */
function secretFile (file: string, text: string, owner: string | null): string {
  const tag = 'MESHWORK_SECRET_EOF'
  if (text.includes(tag)) throw new Error('secret text contains the heredoc tag')
  return [
    `(umask 077; cat > ${shq(file + '.tmp')} <<'${tag}'`,
    text.trimEnd(),
    tag,
    ') || fail "cannot write ' + file + '"',
    ...(owner !== null ? [`chown ${owner} ${shq(file + '.tmp')} || fail "cannot chown ${file}"`] : []),
    `mv -f ${shq(file + '.tmp')} ${shq(file)} || fail "cannot write ${file}"`
  ].join('\n')
}

/**
 * Node reads the metrics page and prints `N peers connected, M nodes alive`;
 * a joining node (argv[2] = seconds to wait) is read again until it has a peer
 * or the time is up, so its line tells whether it reached the mesh.
 */
const HEALTH_JS = String.raw`const [addr,wait]=process.argv.slice(1);const end=Date.now()+Number(wait)*1000;const g=(t,n)=>{const m=new RegExp("^meshwork_"+n+" (\\S+)$","m").exec(t);return m?Number(m[1]):NaN};(async()=>{for(;;){let t;try{t=await (await fetch("http://"+addr+"/metrics")).text()}catch(e){console.log("metrics unreachable: "+e.message);return}const c=g(t,"connected_peers");if(c>0||Date.now()>=end){console.log(c+" peers connected, "+g(t,"peers\\{state=\"alive\"\\}")+" nodes alive");return}await new Promise(r=>setTimeout(r,250))}})()`

/** The install-and-start script for one host. */
export function installScript (p: InstallParams): string {
  const { plan } = p
  const systemd = plan.mode === 'systemd'
  const secretName = p.secret.kind === 'join' ? 'join.token' : 'swarm.key'
  const secretPath = `${plan.conf}/${secretName}`
  const cmd = [shq(plan.bin), 'node', ...p.args.map(shq)].join(' ')
  const lines = [
    'set -u',
    'fail () { printf "MESHWORK_FAIL %s\\n" "$*"; exit 1; }',
    'step () { printf "MESHWORK_STEP %s\\n" "$*"; }',
    'lastline () { grep -v "^[[:space:]]*$" "$1" 2>/dev/null | grep -v "^npm warn" | tail -n 1; }',
    `STAGE=${shq(p.stage)}; PREFIX=${shq(plan.prefix)}; DATA=${shq(plan.data)}; REPO=${shq(plan.repo)}; CONF=${shq(plan.conf)}`,
    'trap \'rm -rf "$STAGE"\' EXIT',
    'umask 022',
    'mkdir -p "$PREFIX/bin" || fail "cannot create $PREFIX"',
    // the Node: the host's own if >= 22.18, else (or a copy from an earlier launch) npm's node package
    'node_ok () { "$1" -e \'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=18)?0:1)\' >/dev/null 2>&1; }',
    'PKGNODE="$PREFIX/node/node_modules/node/bin/node"',
    'if command -v node >/dev/null 2>&1 && node_ok "$(command -v node)"; then NODE=$(command -v node); NODE_SRC="the host\'s"',
    `elif [ -x "$PKGNODE" ] && [ "$("$PKGNODE" --version 2>/dev/null)" = ${shq('v' + p.nodeVersion)} ]; then NODE="$PKGNODE"; NODE_SRC="npm's node package"`,
    'else',
    `  step ${shq(`installing Node.js ${p.nodeVersion} (npm's node package)`)}`,
    `  npm install --prefix "$PREFIX/node" --no-audit --no-fund --prefer-offline --loglevel=error ${shq('node@' + p.nodeVersion)} >"$STAGE/npm-node.log" 2>&1 || fail "npm install node@${p.nodeVersion} failed: $(lastline "$STAGE/npm-node.log")"`,
    '  NODE="$PKGNODE"; NODE_SRC="npm\'s node package"',
    '  node_ok "$NODE" || fail "the Node.js of npm\'s node package does not run here ($NODE)"',
    'fi',
    'step "installing meshwork with $NODE ($("$NODE" --version))"',
    'PATH="$(dirname "$NODE"):$PATH" npm install -g --prefix "$PREFIX" --no-audit --no-fund --prefer-offline --loglevel=error "$STAGE/meshwork.tgz" >"$STAGE/npm.log" 2>&1 || fail "npm install of the meshwork tarball failed: $(lastline "$STAGE/npm.log")"',
    'MAIN="$PREFIX/lib/node_modules/meshwork/bin/meshwork.js"',
    '[ -f "$MAIN" ] || fail "npm installed no $MAIN"',
    // the package's bin runs `env node`, which may be an older Node: the wrapper names ours
    'case "$NODE$MAIN" in *[\\\"\\$\\`]*) fail "paths with quotes, $ or backquotes are not supported: $NODE $MAIN";; esac',
    'rm -f "$PREFIX/bin/meshwork"',
    '{ echo "#!/bin/sh"; printf \'exec "%s" "%s" "$@"\\n\' "$NODE" "$MAIN"; } > "$PREFIX/bin/meshwork" && chmod 0755 "$PREFIX/bin/meshwork" || fail "cannot write $PREFIX/bin/meshwork"',
    'V=$("$PREFIX/bin/meshwork" --version 2>&1) || fail "the installed meshwork does not run: $V"',
    `[ "$V" = ${shq(p.version)} ] || fail "installed meshwork reports version $V, expected ${p.version}"`
  ]
  if (systemd) {
    lines.push(
      'id meshwork >/dev/null 2>&1 || useradd --system --home-dir /var/lib/meshwork --shell /usr/sbin/nologin meshwork || fail "cannot create the meshwork user"',
      'install -d -m 0700 -o meshwork -g meshwork "$CONF" || fail "cannot create $CONF"',
      '[ -f "$CONF/meshwork.env" ] || printf "# credentials (ANTHROPIC_API_KEY=... or CLAUDE_CODE_OAUTH_TOKEN=...), read by meshwork-node.service\\n" > "$CONF/meshwork.env"',
      'chown meshwork:meshwork "$CONF/meshwork.env" && chmod 0600 "$CONF/meshwork.env" || fail "cannot secure $CONF/meshwork.env"',
      secretFile(secretPath, p.secret.text, 'meshwork:meshwork'),
      'for d in "$(dirname "$DATA")" "$(dirname "$REPO")"; do [ -d "$d" ] || install -d -m 0700 -o meshwork -g meshwork "$d" || fail "cannot create $d"; done',
      "cat > /etc/systemd/system/meshwork-node.service <<'MESHWORK_UNIT_EOF' || fail \"cannot write the unit\"",
      p.unit.trimEnd(),
      'MESHWORK_UNIT_EOF',
      'rm -f "$DATA/node.json"',
      'step "starting meshwork-node.service"',
      'systemctl daemon-reload && systemctl enable --quiet meshwork-node.service && systemctl restart meshwork-node.service || fail "systemctl could not start meshwork-node: $(journalctl -u meshwork-node -n 1 -o cat --no-pager 2>/dev/null)"',
      'alive () { ! systemctl is-failed --quiet meshwork-node.service && [ "$(systemctl show -p MainPID --value meshwork-node.service)" != 0 ]; }',
      'why () { journalctl -u meshwork-node -n 20 -o cat --no-pager 2>/dev/null | grep -v "^[[:space:]]*$" | tail -n 1; }'
    )
  } else {
    lines.push(
      'mkdir -p "$CONF" && chmod 0700 "$CONF" || fail "cannot create $CONF"',
      secretFile(secretPath, p.secret.text, null),
      `PIDFILE=${shq(plan.pidFile)}; LOG=${shq(plan.log)}`,
      // an earlier launch's node (same prefix) stops first: its data dir is the one we start on
      'if [ -f "$PIDFILE" ]; then old=$(cat "$PIDFILE"); if [ -n "$old" ] && grep -q meshwork "/proc/$old/cmdline" 2>/dev/null; then',
      '  step "stopping the node started by an earlier launch (pid $old)"; kill -TERM "$old" 2>/dev/null',
      // a zombie (exited, not yet reaped) has stopped too
      '  i=0; while kill -0 "$old" 2>/dev/null && ! grep -q "^State:[[:space:]]*Z" "/proc/$old/status" 2>/dev/null; do i=$((i+1)); [ $i -gt 400 ] && fail "the earlier node (pid $old) did not stop within 100 s"; sleep 0.25; done',
      'fi; fi',
      'rm -f "$DATA/node.json"',
      'mkdir -p "$(dirname "$DATA")" "$(dirname "$REPO")"',
      `[ -f "$CONF/meshwork.env" ] && { set -a; . "$CONF/meshwork.env"; set +a; }`,
      p.secret.kind === 'join' ? `MESHWORK_JOIN_FILE=${shq(secretPath)}; export MESHWORK_JOIN_FILE; unset MESHWORK_SWARM_KEY MESHWORK_JOIN` : `MESHWORK_SWARM_KEY=${shq(secretPath)}; export MESHWORK_SWARM_KEY; unset MESHWORK_JOIN_FILE MESHWORK_JOIN`,
      'step "starting the node under nohup"',
      'cd "$PREFIX" || fail "cannot cd to $PREFIX"',
      'if command -v setsid >/dev/null 2>&1; then SETSID=setsid; else SETSID=; fi',
      `$SETSID nohup ${cmd} >>"$LOG" 2>&1 </dev/null &`,
      'PID=$!; echo "$PID" > "$PIDFILE"',
      'alive () { kill -0 "$PID" 2>/dev/null; }',
      'why () { grep -v "^[[:space:]]*$" "$LOG" 2>/dev/null | tail -n 1; }'
    )
  }
  lines.push(
    `i=0; while [ ! -s "$DATA/node.json" ]; do`,
    '  alive || { sleep 0.5; fail "the node exited: $(why)"; }',
    `  i=$((i+1)); [ $i -gt ${p.startTimeoutS * 4} ] && fail "the node wrote no $DATA/node.json within ${p.startTimeoutS} s: $(why)"`,
    '  sleep 0.25',
    'done',
    'printf "MESHWORK_NODE %s %s\\n" "$("$NODE" --version)" "$NODE_SRC"',
    p.metrics !== null ? `printf "MESHWORK_HEALTH %s\\n" "$("$NODE" -e ${shq(HEALTH_JS)} ${shq(p.metrics)} ${p.secret.kind === 'join' ? HEALTH_PEER_WAIT_S : 0})"` : 'echo "MESHWORK_HEALTH running (no --metrics to ask)"',
    'printf "MESHWORK_RESULT %s\\n" "$(tr -d "\\n" < "$DATA/node.json")"',
    ''
  )
  return lines.join('\n')
}
