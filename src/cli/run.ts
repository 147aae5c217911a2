import type { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { isBerthError, ValidationError } from '../common/errors.js';
import { containerNameForTask } from '../common/labels.js';
import { pipeline } from 'node:stream/promises';
import { oneShotImages } from './progress.js';
import { cliEngine } from './engine-choice.js';
import { SPEC_BOUNDS, type TaskSpec } from '../spec/schema.js';
import { TaskDriver } from '../tasks/driver.js';
import { packLocalPath } from '../tasks/files-in.js';
import { copyUploadId, parseCopyFlag } from './cp-in.js';
import type { TaskHandle } from '../tasks/handle.js';
import { describeEndState } from '../tasks/end-state.js';
import { commandFailureOf } from '../engine/classify.js';
import { commandFailureLine, EXIT, exitCodeForEnd } from './exit-codes.js';
import { startTerminalSession } from './terminal.js';
import { exitCodeForSignal, type Interrupts } from './interrupts.js';
import { errorLine, formatPublishedPort } from './output.js';
import { collectFromHandle, collectPathForAgent, parseCollectFlag } from './cp.js';
import {
  collect,
  healthcheckFromFlags,
  limitCountFlag,
  networkFromFlags,
  limitDurationFlag,
  limitSizeFlag,
  oomScoreAdjFlag,
  parseCpus,
  parseDeviceFlag,
  parseSecurityOpts,
  parseSysctlFlags,
  parseTmpfsFlag,
  parseUlimitFlags,
  parseEnvFiles,
  parseEnvFlags,
  parseLabelFlags,
  parseMountFlag,
  parseVolumeFlag,
  pullFlag,
  sizeFlag,
  stopTimeoutFlag,
  withFlagNames,
  type HealthFlags,
  type NoLimitRefusal,
} from './flags.js';

export interface CliIo {
  stdin: Readable;
  stdout: Writable;
  stderr: Writable;
  env: Readonly<Record<string, string | undefined>>;
  /** The process's stop signals (SIGINT, SIGTERM): see interrupts.ts. */
  interrupts: Interrupts;
  /** `berth --context <name>`: the Docker context of the engine (engine-choice.ts); set by the program before a command runs. */
  context?: string;
}

interface RunFlags extends HealthFlags {
  /** `--copy LOCAL:PATH` values (cp-in.ts): placed before the task starts. */
  copy?: string[];
  /** `--collect PATH[:LOCAL]`: copied out after the end, before the container is removed (src/cli/cp.ts). */
  collect?: string[];
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
  env: string[];
  workdir?: string;
  user?: string;
  label: string[];
  mount: string[];
  /** `-v`; absent in callers that build flags by hand. */
  volume?: string[];
  envFile?: string[];
  rm?: boolean;
  network?: string;
  /** `--network-alias`: the task's DNS names on the named network; absent in callers that build flags by hand. */
  networkAlias?: string[];
  /** `-p/--publish`; absent in callers that build flags by hand. */
  publish?: string[];
  capAdd: string[];
  capDrop: string[];
  privileged?: boolean;
  timeout?: string;
  stopSignal?: string;
  stopTimeout?: string;
  logDriver?: string;
  logMaxSize?: string;
  entrypoint?: string;
  interactive?: boolean;
  tty?: boolean;
  keep?: boolean;
  name?: string;
  pull?: string;
  /** `--registry-auth NAME`: credentials configured in the agent (`registries.NAME`), for a task the agent runs. */
  registryAuth?: string;
  readOnly?: boolean;
  /** The sandbox's flags; absent in callers that build flags by hand. */
  tmpfs?: string[];
  securityOpt?: string[];
  ulimit?: string[];
  init?: boolean;
  shmSize?: string;
  hostname?: string;
  dns?: string[];
  dnsSearch?: string[];
  addHost?: string[];
  sysctl?: string[];
  device?: string[];
  runtime?: string;
  oomScoreAdj?: string;
  cpusetCpus?: string;
}

/**
 * Who runs the task the flags describe: `berth run` itself (the engine, where no limit is no limit)
 * or the agent (`submit`, `run -d`), which gives a task without a limit its configured default and
 * reserves it from its budget, so that `-m 0`, `--cpus 0` and `--pids-limit 0` (no limit) are refused.
 */
export type FlagTarget = 'engine' | 'agent';

/** Agent keys whose default a task without that limit gets, by flag. */
const AGENT_DEFAULT_KEYS: Readonly<Record<string, string>> = {
  '-m/--memory': 'defaults.resources.memory',
  '--cpus': 'defaults.resources.cpuMilli',
  '--pids-limit': 'defaults.resources.pidsLimit',
};

/** Why a limit flag's 0 ("no limit") is refused for the target: never for berth run; for the agent, always. */
function noLimitRefusal(flag: string, target: FlagTarget): NoLimitRefusal {
  if (target === 'engine') return undefined;
  return `0 (no limit) is not available for a task the agent runs: it gives every task a limit (its ${AGENT_DEFAULT_KEYS[flag]} key) and reserves it; give a limit, or leave the flag out for the agent's default`;
}

/**
 * Builds a task spec from `berth run` flags (and submit's, with `target: 'agent'`); a bad value is
 * named by its flag. Durations and sizes follow the one rule of common/units.ts.
 */
export function specFromRunFlags(image: string, command: readonly string[], flags: RunFlags, io: Pick<CliIo, 'env' | 'stdin'>, target: FlagTarget = 'engine'): TaskSpec {
  if (flags.rm && flags.keep) throw new ValidationError([{ field: '--rm', rule: 'cannot be combined with --keep (--rm, removing the container when the task ends, is the default)' }]);
  const mounts = flags.mount.map(parseMountFlag);
  const spec: TaskSpec = {
    image,
    // docker's order: the files first, then -e over them.
    env: { ...parseEnvFiles(flags.envFile ?? [], io.env), ...parseEnvFlags(flags.env, io.env) },
    labels: parseLabelFlags(flags.label),
    mounts: [...mounts, ...(flags.volume ?? []).map((value, index) => parseVolumeFlag(value, index)), ...(flags.tmpfs ?? []).map(parseTmpfsFlag)],
    capAdd: flags.capAdd,
    capDrop: flags.capDrop,
    resources: {},
  };
  if (command.length > 0) spec.command = [...command];
  if (flags.entrypoint !== undefined) spec.entrypoint = flags.entrypoint === '' ? [] : [flags.entrypoint];
  if (flags.workdir !== undefined) spec.workdir = flags.workdir;
  if (flags.user !== undefined) spec.user = flags.user;
  if (flags.memory !== undefined) {
    const memory = limitSizeFlag(flags.memory, '-m/--memory', SPEC_BOUNDS.memory, noLimitRefusal('-m/--memory', target));
    if (memory !== undefined) spec.resources!.memory = memory;
  }
  if (flags.cpus !== undefined) {
    const cpuMilli = parseCpus(flags.cpus, noLimitRefusal('--cpus', target));
    if (cpuMilli !== undefined) spec.resources!.cpuMilli = cpuMilli;
  }
  if (flags.pidsLimit !== undefined) {
    const pidsLimit = limitCountFlag(flags.pidsLimit, '--pids-limit', SPEC_BOUNDS.pidsLimit, noLimitRefusal('--pids-limit', target));
    if (pidsLimit !== undefined) spec.resources!.pidsLimit = pidsLimit;
  }
  Object.assign(spec, networkFromFlags(flags));
  if (flags.privileged) spec.privileged = true;
  if (flags.timeout !== undefined) {
    // 0 is no run time limit (the default), not a limit that ends the task at once.
    const timeout = limitDurationFlag(flags.timeout, '--timeout', SPEC_BOUNDS.timeout);
    if (timeout !== undefined) spec.timeout = timeout;
  }
  if (flags.stopSignal !== undefined) spec.stopSignal = flags.stopSignal;
  if (flags.stopTimeout !== undefined) spec.stopGracePeriod = stopTimeoutFlag(flags.stopTimeout);
  if (flags.logDriver !== undefined || flags.logMaxSize !== undefined) {
    spec.log = { driver: (flags.logDriver ?? 'local') as 'local', ...(flags.logMaxSize ? { maxSize: sizeFlag(flags.logMaxSize, '--log-max-size', SPEC_BOUNDS.logMaxSize) } : {}) };
  }
  if (flags.tty) spec.tty = true;
  if (flags.interactive) spec.stdin = io.stdin;
  if (flags.pull !== undefined) spec.pull = pullFlag(flags.pull);
  if (flags.registryAuth !== undefined) {
    if (target === 'engine') {
      throw new ValidationError([
        {
          field: '--registry-auth',
          rule: 'names registry credentials configured in the agent (registries.<name>): use it with --detach (-d) or berth submit; berth run itself pulls with the Docker configuration\'s credentials (docker login)',
        },
      ]);
    }
    spec.registryAuth = { ref: flags.registryAuth };
  }
  const healthcheck = healthcheckFromFlags(flags);
  if (healthcheck !== undefined) spec.healthcheck = healthcheck;
  addSandboxFlags(spec, flags, target);
  // Through the agent the paths become the spec's `collect` (kept with the task; berth cp reads them).
  if (target === 'agent' && (flags.collect?.length ?? 0) > 0) spec.collect = (flags.collect ?? []).map((flag) => collectPathForAgent(flag));
  return spec;
}

/** The sandbox's docker flags, each set in the spec only when given (a task the agent runs then gets the agent's defaults). */
function addSandboxFlags(spec: TaskSpec, flags: RunFlags, target: FlagTarget): void {
  if (flags.readOnly) spec.readOnlyRootfs = true;
  Object.assign(spec, parseSecurityOpts(flags.securityOpt ?? [], target));
  if (flags.ulimit?.length) spec.ulimits = parseUlimitFlags(flags.ulimit);
  if (flags.init) spec.init = true;
  if (flags.shmSize !== undefined) spec.shmSize = sizeFlag(flags.shmSize, '--shm-size', SPEC_BOUNDS.shmSize);
  if (flags.hostname !== undefined) spec.hostname = flags.hostname;
  if (flags.dns?.length) spec.dns = flags.dns;
  if (flags.dnsSearch?.length) spec.dnsSearch = flags.dnsSearch;
  if (flags.addHost?.length) spec.extraHosts = flags.addHost;
  if (flags.sysctl?.length) spec.sysctls = parseSysctlFlags(flags.sysctl);
  if (flags.device?.length) spec.devices = flags.device.map(parseDeviceFlag);
  if (flags.runtime !== undefined) spec.runtime = flags.runtime;
  if (flags.oomScoreAdj !== undefined) spec.oomScoreAdj = oomScoreAdjFlag(flags.oomScoreAdj);
  if (flags.cpusetCpus !== undefined) spec.cpuset = flags.cpusetCpus;
}

export function addRunCommand(program: Command, io: CliIo, setExitCode: (code: number) => void): void {
  program
    .command('run')
    .description('Run a task in a new container, stream its output, and exit with its exit code')
    .argument('<image>', 'image to run')
    .argument('[command...]', 'command and arguments (default: the image\'s)')
    .passThroughOptions()
    .option('-m, --memory <size>', 'memory limit with a unit, e.g. 512m or 1g (swap disabled); 0 for no limit')
    .option('--cpus <n>', 'CPUs, e.g. 0.5; 0 for no limit')
    .option('--pids-limit <n>', 'maximum number of processes; 0 for no limit')
    .option('--collect <PATH[:LOCAL]>', 'after the task ends (whatever its end), copy PATH out of its container to LOCAL (default ./<basename>), as docker cp does (repeatable)', collect, [])
    .option('-e, --env <KEY=VALUE>', 'set an environment variable (repeatable; KEY alone passes berth\'s own)', collect, [])
    .option('--env-file <file>', 'read environment variables from a file of KEY=VALUE lines (# comments; KEY alone passes berth\'s own; repeatable; -e overrides)', collect, [])
    .option('-w, --workdir <dir>', 'working directory inside the container')
    .option('-u, --user <user>', 'user[:group] or uid[:gid]')
    .option('-l, --label <key=value>', 'add a label (repeatable)', collect, [])
    .option('--mount <spec>', 'type=bind|volume|tmpfs,source=…,target=…[,readonly][,propagation=private|host-to-task|bidirectional]', collect, [])
    .option('-v, --volume <src:dst[:opts]>', 'docker\'s short mount syntax: /host/path:/path[:ro|rw][,rslave…] (bind), name:/path[:ro] (named volume) or /path (anonymous volume); the same policy as --mount (repeatable)', collect, [])
    .option('--network <mode>', 'none (default; bridge with -p), bridge, host, or the name of a user-defined network to join instead of the bridge (with -d, one the agent\'s policy.allowedNetworks lists)')
    .option('--network-alias <name>', 'a DNS name of the task on the named network of --network (repeatable)', collect, [])
    .option('-p, --publish <[ip:][host:]container[/udp]>', 'publish a container port on the host, as docker: 80 (a dynamic host port), 8080:80, 127.0.0.1:8080:80, 127.0.0.1::80, 53:53/udp; bound to 127.0.0.1 unless an address is given; implies --network bridge (repeatable)', collect, [])
    .option('--cap-add <cap>', 'add a Linux capability (repeatable)', collect, [])
    .option('--cap-drop <cap>', 'drop a Linux capability (repeatable)', collect, [])
    .option('--privileged', 'give the task extended privileges')
    .option('--timeout <duration>', 'run time limit with a unit, e.g. 30s or 5m; 0 for none (default); the task is stopped and berth exits 124')
    .option('--stop-signal <signal>', 'signal that stops the task (default SIGTERM)')
    .option('--stop-timeout <seconds>', 'grace period before SIGKILL, in seconds as docker (10) or with a unit (1m30s); default 10')
    .option('--log-driver <driver>', 'the engine\'s own log: local (default), json-file or none')
    .option('--log-max-size <size>', 'bound of the engine\'s own log, with a unit, e.g. 1m (default)')
    .option('--entrypoint <cmd>', 'override the image\'s entrypoint')
    .option('-i, --interactive', 'forward stdin to the task')
    .option('-t, --tty', 'allocate a pseudo-TTY sized as the terminal (with -i on a terminal: raw mode, as docker run -it)')
    .option('--keep', 'keep the container after the task ends (default: removed)')
    .option('--rm', 'remove the container when the task ends: berth\'s default, accepted for docker\'s command lines (refused with --keep)')
    .option('--name <task-id>', 'task id (the container is berth-<task-id>.cli.3); a second run with a task id in use is refused, as docker refuses a name in use')
    .option('--pull <policy>', 'pull the image: missing (default), always or never')
    .option('--registry-auth <name>', 'pull with the registry credentials configured in the agent under registries.<name> (with -d/--detach)')
    .option('--health-cmd <command>', 'health check: a shell command run in the container (CMD-SHELL); exit 0 is healthy')
    .option('--health-interval <duration>', 'time between health checks (default 1s with --health-cmd, else the image\'s)')
    .option('--health-timeout <duration>', 'longest a health check may run (default 5s with --health-cmd, else the image\'s)')
    .option('--health-start-period <duration>', 'start-up time in which failed checks do not count (default none)')
    .option('--health-retries <n>', 'consecutive failures that make the task unhealthy (default 3 with --health-cmd, else the image\'s)')
    .option('--no-healthcheck', 'disable any health check, the image\'s own HEALTHCHECK included')
    .option('--read-only', 'mount the container\'s root file system read-only (writes go to --tmpfs or volumes)')
    .option('--tmpfs <path[:size=…,mode=…]>', 'mount a tmpfs, e.g. /tmp:size=64m,mode=1777 (repeatable)', collect, [])
    .option('--security-opt <opt>', 'no-new-privileges[=true], seccomp=default|unconfined|PROFILE, apparmor=PROFILE (repeatable); PROFILE is a JSON file for berth run, a name from the agent\'s policy.allowedSeccompProfiles with -d', collect, [])
    .option('--ulimit <name=soft[:hard]>', 'a resource limit, e.g. nofile=1024:2048 (repeatable)', collect, [])
    .option('--init', 'run the engine\'s init as PID 1: it reaps zombies and forwards signals')
    .option('--shm-size <size>', 'size of /dev/shm with a unit, e.g. 64m (default the engine\'s)')
    .option('--hostname <name>', 'the container\'s host name (docker\'s -h is berth\'s --help)')
    .option('--dns <ip>', 'a DNS server (repeatable)', collect, [])
    .option('--dns-search <domain>', 'a DNS search domain (repeatable)', collect, [])
    .option('--add-host <host:ip>', 'add a line to /etc/hosts (repeatable)', collect, [])
    .option('--sysctl <key=value>', 'a namespaced sysctl: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* (repeatable)', collect, [])
    .option('--device <host[:container][:rwm]>', 'give the task a host device (repeatable)', collect, [])
    .option('--runtime <name>', 'the OCI runtime, e.g. runc or runsc (default the engine\'s)')
    .option('--oom-score-adj <n>', 'OOM killer preference, -1000 to 1000')
    .option('--cpuset-cpus <list>', 'CPUs the task may run on, e.g. 0-1,3')
    .option('--copy <LOCAL:PATH>', 'copy a local file or directory into the container before the task starts, as PATH (repeatable; owned by root, modes kept)', collect, [])
    .action(async (image: string, command: string[], flags: RunFlags) => {
      setExitCode(await runCommand(image, command, flags, io));
    });
}

async function runCommand(image: string, command: string[], flags: RunFlags, io: CliIo): Promise<number> {
  const spec = specFromRunFlags(image, command, flags, io);
  // Each --copy is an upload this process opens from disk when the container is made: streamed, never held whole.
  const copies = (flags.copy ?? []).map((value, index) => parseCopyFlag(value, index));
  if (copies.length > 0) spec.files = copies.map((_copy, index) => ({ upload: copyUploadId(index), path: '/' }));
  const openUpload = (id: string): Readable | undefined => {
    const copy = copies.find((_c, index) => copyUploadId(index) === id);
    return copy && packLocalPath(copy.local, copy.path);
  };
  const engine = await cliEngine(io);
  const images = oneShotImages(engine, io);
  // The person at the terminal is the caller: the CLI allows what they ask for explicitly. They
  // reach the engine's socket already, so an explicit --mount of it (or of a directory above it) is theirs
  // to ask for; a library driver and the agent refuse it by default. Sources are still resolved
  // (symlinks followed, the engine given the real path) and must exist.
  // Owned by this process, so that a killed run's container is removed by the reconciler and prune; --keep asks for it to outlive the run.
  const driver = new TaskDriver({ engine, ownerId: 'cli', ownerProcess: flags.keep ? 'none' : 'self', policy: { allowPrivileged: true, allowEngineSocket: true }, images, openUpload });
  let resolved: ReturnType<TaskDriver['resolve']>;
  try {
    resolved = driver.resolve(spec);
    driver.resolveBindSources(resolved);
  } catch (error) {
    // Named by the flags that set the fields (`-m/--memory`, not `resources.memory`).
    throw withFlagNames(error);
  }
  for (const flag of flags.collect ?? []) parseCollectFlag(flag);
  // Nothing is made before this answers: a signal meanwhile exits at once.
  await engine.checkCompatible();

  // Chosen here, not by the driver, so that a forced exit can name the container it leaves behind.
  const taskId = flags.name ?? randomUUID();
  const containerName = containerNameForTask({ taskId, ownerId: driver.ownerId });
  const abort = new AbortController();
  let handle: TaskHandle | undefined;
  let removed = false;
  // The first signal aborts the start, or stops the task; the cleanup in `finally` then removes
  // the container. Its bound allows for the task's stop grace period.
  io.interrupts.extendBound(resolved.stopGraceMs);
  let markStopped: () => void = () => undefined;
  const stoppedOnSignal = new Promise<void>((resolve) => (markStopped = resolve));
  const removeInterrupt = io.interrupts.onInterrupt((signal) => {
    // Feedback for the person who pressed Ctrl-C (in raw mode Ctrl-C is a byte for the task's TTY,
    // not a signal, so this is the case without one): the stop takes up to the grace period.
    if (signal === 'SIGINT') {
      const what = handle ? 'stopping the task' : 'cancelling the start';
      const leave = flags.keep ? 'exit now' : 'exit now and leave the container to berth prune or an agent';
      io.stderr.write(`berth: ${what}; press Ctrl-C again to ${leave}\n`);
    }
    // Stopped here rather than by the driver's abort listener, so that the cleanup knows when the
    // stop is done even if the engine never reports the end (a wedged wait).
    if (handle) void handle.stop().then(markStopped);
    abort.abort();
  });
  const removeLeaving = io.interrupts.leaving(() => {
    if (removed || flags.keep) return undefined;
    const which = handle ? `container ${containerName}` : `container ${containerName} (if the engine created it)`;
    return `${which}, for berth prune or an agent's reconciler to remove`;
  });
  let endTerminalSession = (): void => undefined;
  try {
    const started = (handle = await driver.start(spec, { taskId, signal: abort.signal }));
    // A dynamic port's host port is the engine's pick: said once on stderr, as the address to reach the task at.
    if ((spec.ports?.length ?? 0) > 0) {
      const published = await started.ports().catch(() => []);
      if (published.length > 0) io.stderr.write(`berth: published ${published.map(formatPublishedPort).join(', ')}\n`);
    }
    // Once the task runs: before that, Ctrl-C must stay a signal that cancels the pull or the start.
    endTerminalSession = startTerminalSession({
      stdin: io.stdin,
      stdout: io.stdout,
      interactive: flags.interactive ?? false,
      tty: flags.tty ?? false,
      // A refused resize (the task has just ended) is ignored: no reason to end the session.
      resize: (size) => started.resize(size),
    });
    return await followTask(io, started, stoppedOnSignal, endTerminalSession);
  } catch (error) {
    endTerminalSession();
    const signal = io.interrupts.received;
    const commandFailure = signal === undefined ? commandFailureOf(error) : undefined;
    if (commandFailure) {
      io.stderr.write(`${commandFailureLine(commandFailure)}\n`);
      return commandFailure.exitCode;
    }
    // A spec refused at start (a named network the engine does not have) is named by its flags too.
    if (signal === undefined) throw withFlagNames(error);
    io.stderr.write(isBerthError(error, 'BERTH_CANCELLED') ? 'berth: cancelled\n' : `${errorLine(error)}\n`);
    return exitCodeForSignal(signal);
  } finally {
    endTerminalSession();
    try {
      // Whatever the end (a failed run's reports most of all), before the container goes.
      if (handle && (flags.collect?.length ?? 0) > 0) await collectFromHandle(io, handle, flags.collect ?? []);
      if (handle && !flags.keep) await handle.destroy();
      if (handle) removed = true;
      // A create that timed out may still land in a wedged engine: wait out the guard before exiting.
      await driver.settled();
      removed = true;
      await images.close();
    } finally {
      removeLeaving();
      removeInterrupt();
    }
  }
}

/**
 * Streams the task's output and resolves with the exit code its end calls for; after a stop signal,
 * with the signal's code once the task was stopped, whether or not the engine reported its end.
 */
async function followTask(io: CliIo, handle: TaskHandle, stoppedOnSignal: Promise<void>, endTerminalSession: () => void): Promise<number> {
  const output = Promise.all([
    pipeline(handle.stdout, io.stdout, { end: false }),
    pipeline(handle.stderr, io.stderr, { end: false }),
  ]);
  const end = await Promise.race([handle.wait(), stoppedOnSignal.then(() => undefined)]);
  const signal = io.interrupts.received;
  if (end === undefined) return exitCodeForSignal(signal ?? 'SIGINT');
  await output.catch(() => undefined);
  // The terminal is the user's again before berth says anything of its own.
  endTerminalSession();
  // Stopped because berth was asked to stop: the signal's code (130 for SIGINT, 143 for SIGTERM).
  const exitCode = end.kind === 'cancelled' && signal !== undefined ? exitCodeForSignal(signal) : exitCodeForEnd(end);
  // A task's own exit code needs no words; any other end says what happened and the code berth exits with.
  if (end.kind !== 'success' && end.kind !== 'failed') {
    io.stderr.write(`berth: task ${describeEndState(end, { stopGraceMs: handle.spec.stopGraceMs, stopSignal: handle.spec.stopSignal })}; exiting ${exitCode}\n`);
  }
  return exitCode;
}

export { EXIT };
