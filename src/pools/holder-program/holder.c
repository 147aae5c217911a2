/*
 * berth's holder program for warm pool containers (x86-64 Linux, no libc). Two modes:
 *
 *   holder           PID 1 of an idle pool container: sleeps in pause() until a signal ends it.
 *   holder launch    A launcher, started as an exec in an idle container before any task comes. It
 *                    reads one request from stdin, then becomes the task's process with execve: the
 *                    task's output flows through the exec's streams that are already attached, so
 *                    a warm start costs a write instead of an exec's create and start.
 *
 * The request, little-endian: "BRTH", u32 length L, then L bytes: u32 argc, u32 envc, and argc + envc
 * + 1 NUL-terminated strings: the working directory ("" keeps the container's), the arguments, and
 * the task's environment entries (KEY=VALUE), which replace the container's entries of the same key.
 * Whatever stdin holds after the request is the task's stdin. Once the whole request is read, and
 * before anything of the task is done, the launcher writes the acknowledgement "BRTH" 0x06 to stderr:
 * berth takes the task as started only once it reads it, so a launcher that died (or never read the
 * request) is told from a task that ran, and the task can start elsewhere without running twice.
 * A command that cannot be run fails as a shell (and the docker CLI) does: 127 when it is not found,
 * 126 when it cannot be executed.
 *
 * Built by scripts/build-holder.sh into src/pools/holder-binary.ts; the binary is checked in so
 * that berth needs no compiler.
 */
#define SYS_read 0
#define SYS_write 1
#define SYS_pause 34
#define SYS_execve 59
#define SYS_exit 60
#define SYS_chdir 80
#define ENOENT 2
#define EINTR 4
#define EACCES 13
#define ENOTDIR 20

#define REQUEST_MAX (1 << 20)
#define STRINGS_MAX 16384
#define PATH_MAX_BYTES 4096

static long sys3(long n, long a, long b, long c) {
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return r;
}

static char request[REQUEST_MAX];
static char *task_argv[STRINGS_MAX + 1];
static char *task_envp[2 * STRINGS_MAX + 1];
static char candidate[PATH_MAX_BYTES];

static long length_of(const char *s) {
  long n = 0;
  while (s[n]) n++;
  return n;
}

static void say(const char *s) { sys3(SYS_write, 2, (long)s, length_of(s)); }

static void fail(const char *what, const char *detail, int code) {
  say("exec: \"");
  say(what);
  say("\": ");
  say(detail);
  say("\n");
  sys3(SYS_exit, code, 0, 0);
}

static int read_fully(char *to, long n) {
  long got = 0;
  while (got < n) {
    long r = sys3(SYS_read, 0, (long)(to + got), n - got);
    if (r == -EINTR) continue;
    if (r <= 0) return -1;
    got += r;
  }
  return 0;
}

static unsigned u32_at(const char *p) {
  const unsigned char *b = (const unsigned char *)p;
  return (unsigned)b[0] | ((unsigned)b[1] << 8) | ((unsigned)b[2] << 16) | ((unsigned)b[3] << 24);
}

/* Whether the entry "KEY=..." has the same key as the entry `other`. */
static int same_key(const char *entry, const char *other) {
  long i = 0;
  while (entry[i] && entry[i] != '=' && entry[i] == other[i]) i++;
  return entry[i] == '=' && other[i] == '=';
}

static void launch(char **own_envp) {
  char head[8];
  if (read_fully(head, 8) != 0 || head[0] != 'B' || head[1] != 'R' || head[2] != 'T' || head[3] != 'H') fail("launch", "no request on stdin", 126);
  unsigned length = u32_at(head + 4);
  if (length < 8 || length > REQUEST_MAX || read_fully(request, length) != 0) fail("launch", "a request berth did not write", 126);
  unsigned argc = u32_at(request), envc = u32_at(request + 4);
  if (argc == 0 || argc > STRINGS_MAX || envc > STRINGS_MAX) fail("launch", "a request with too many strings", 126);
  char *p = request + 8, *end = request + length;
  char *strings[1 + 2 * STRINGS_MAX];
  for (unsigned i = 0; i < 1 + argc + envc; i++) {
    strings[i] = p;
    while (p < end && *p) p++;
    if (p >= end) fail("launch", "a request cut short", 126);
    p++;
  }
  /* The request reached the launcher: from here on, whatever happens is the task's. */
  sys3(SYS_write, 2, (long)"BRTH\x06", 5);
  char *cwd = strings[0];
  for (unsigned i = 0; i < argc; i++) task_argv[i] = strings[1 + i];
  task_argv[argc] = 0;
  /* The container's environment less what the task sets, then the task's. */
  long n = 0;
  for (char **e = own_envp; *e && n < STRINGS_MAX; e++) {
    int replaced = 0;
    for (unsigned j = 0; j < envc && !replaced; j++) replaced = same_key(*e, strings[1 + argc + j]);
    if (!replaced) task_envp[n++] = *e;
  }
  for (unsigned j = 0; j < envc; j++) task_envp[n++] = strings[1 + argc + j];
  task_envp[n] = 0;
  if (cwd[0] && sys3(SYS_chdir, (long)cwd, 0, 0) != 0) fail(cwd, "cannot change to this working directory", 126);
  char *command = task_argv[0];
  for (char *c = command; *c; c++) {
    if (*c == '/') {
      long r = sys3(SYS_execve, (long)command, (long)task_argv, (long)task_envp);
      fail(command, r == -ENOENT || r == -ENOTDIR ? "stat: no such file or directory" : "permission denied", r == -ENOENT || r == -ENOTDIR ? 127 : 126);
    }
  }
  const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (long i = 0; task_envp[i]; i++) {
    const char *e = task_envp[i];
    if (e[0] == 'P' && e[1] == 'A' && e[2] == 'T' && e[3] == 'H' && e[4] == '=') path = e + 5;
  }
  int denied = 0;
  long command_length = length_of(command);
  while (1) {
    const char *next = path;
    while (*next && *next != ':') next++;
    long dir_length = next - path;
    if (dir_length == 0) {
      candidate[0] = '.';
      dir_length = 1;
    } else if (dir_length < PATH_MAX_BYTES) {
      for (long i = 0; i < dir_length; i++) candidate[i] = path[i];
    }
    if (dir_length + 1 + command_length < PATH_MAX_BYTES) {
      candidate[dir_length] = '/';
      for (long i = 0; i <= command_length; i++) candidate[dir_length + 1 + i] = command[i];
      long r = sys3(SYS_execve, (long)candidate, (long)task_argv, (long)task_envp);
      if (r == -EACCES) denied = 1;
    }
    if (!*next) break;
    path = next + 1;
  }
  if (denied) fail(command, "permission denied", 126);
  fail(command, "executable file not found in $PATH", 127);
}

void holder_main(long *stack) {
  long argc = stack[0];
  char **argv = (char **)(stack + 1);
  char **envp = argv + argc + 1;
  if (argc >= 2 && argv[1][0] == 'l') launch(envp);
  for (;;) sys3(SYS_pause, 0, 0, 0);
}

__asm__(".globl _start\n_start:\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call holder_main\n  hlt\n");
