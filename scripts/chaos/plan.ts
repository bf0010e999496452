/**
 * The chaos run's plan: waves of tasks, each writing its own file. Wave 0
 * runs at once; wave k (k >= 1) is held by the sim `until` file of gate k,
 * which the run opens right after fault k is injected, so a fault always finds
 * runs in flight and the plan cannot end before the last fault. Earlier waves
 * have higher priority (nodes claim them first: held runs never starve the
 * wave the next fault waits on). Tasks of later waves depend on 0-2 tasks of
 * earlier waves (a DAG); one task of wave 0 is the hung-verify task.
 */
import { join } from 'node:path'

export interface PlanTask {
  id: string
  prompt: string
  deps: string[]
  priority: number
  sim: { duration: string, write: Record<string, string>, until?: string }
}

export interface ChaosPlan {
  tasks: PlanTask[]
  /** Task ids per wave (the hung-verify task not counted). */
  waves: string[][]
  /** The task whose candidate makes `--verify` hang. */
  hangId: string
  /** Gate file of wave k (index k; index 0 unused). */
  gates: string[]
}

/** The file a task writes on main. */
export const taskFile = (id: string): string => `chaos/${id}.txt`

/**
 * `perWave` tasks a wave, or `total` tasks spread over the waves (earlier waves one more when it does not divide).
 * `chain`: every task of wave k >= 1 depends on a task of wave k-1 (and maybe one earlier), so only the next
 * wave's runs can be held by a closed gate: with waves larger than a few tasks, later waves' tasks without
 * dependencies otherwise take every slot of the mesh, held, while the wave the next fault waits for cannot run.
 */
export function buildPlan (rand: () => number, opts: { waves: number, perWave: number, total?: number, chain?: boolean, gateDir: string }): ChaosPlan {
  const tasks: PlanTask[] = []
  const waves: string[][] = []
  const gates = Array.from({ length: opts.waves }, (_, k) => join(opts.gateDir, `gate-${k}`))
  const duration = (): string => `${200 + Math.round(rand() * 800)}ms`
  for (let k = 0; k < opts.waves; k++) {
    const wave: string[] = []
    const earlier = waves.flat()
    const size = opts.total === undefined ? opts.perWave : Math.floor(opts.total / opts.waves) + (k < opts.total % opts.waves ? 1 : 0)
    for (let i = 0; i < size; i++) {
      const id = `w${k}-t${i}`
      const deps: string[] = []
      if (k > 0 && opts.chain === true) {
        const prev = waves[k - 1] as string[]
        deps.push(prev[Math.floor(rand() * prev.length)] as string)
        const d = earlier[Math.floor(rand() * earlier.length)] as string
        if (rand() < 0.3 && !deps.includes(d)) deps.push(d)
      } else if (k > 0 && rand() < 0.6) {
        const n = 1 + Math.floor(rand() * 2)
        for (let j = 0; j < n; j++) {
          const d = earlier[Math.floor(rand() * earlier.length)] as string
          if (!deps.includes(d)) deps.push(d)
        }
      }
      tasks.push({
        id,
        prompt: `write ${taskFile(id)}`,
        deps,
        priority: opts.waves - k,
        sim: { duration: duration(), write: { [taskFile(id)]: `${id}\n` }, ...(k > 0 ? { until: gates[k] as string } : {}) }
      })
      wave.push(id)
    }
    waves.push(wave)
  }
  const hangId = 'hang-verify'
  tasks.push({ id: hangId, prompt: `write ${taskFile(hangId)}`, deps: [], priority: opts.waves, sim: { duration: duration(), write: { [taskFile(hangId)]: `${hangId}\n` } } })
  return { tasks, waves, hangId, gates }
}

/**
 * The `--verify` command: hangs (a `sleep` grandchild in the check's process
 * group) when the candidate holds the hung task's file, passes otherwise.
 * `marker` is in its text, so the check's shell can be found with ps.
 */
export function verifyCommand (hangId: string, marker: string): string {
  return `: chaos-verify ${marker}; if test -e ${taskFile(hangId)}; then echo "hanging on ${hangId}"; sleep 100000; fi; test -d chaos`
}
