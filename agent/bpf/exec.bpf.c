// SPDX-License-Identifier: GPL-2.0
/* Exec events for Ward's process sensor: one ring-buffer record per successful exec,
 * written in the new program's context before it runs a single instruction, so a
 * process living a microsecond still arrives with its argv, parent, ids and paths, and
 * where it runs: cgroup, mount and pid namespaces, controlling tty.
 * Layout is `struct exec_event` (little-endian, decoded by agent/src/sensor/ebpf.rs;
 * change both together). A full ring buffer is counted in `lost`, never waited on. */
#include "ward.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "path.h"
#include "context.h"

char LICENSE[] SEC("license") = "GPL";

#define ARGS_MAX 4096     /* argv bytes kept; more is cut and flagged */
#define TTY_NAME 32       /* the controlling tty's name bytes kept (pts3, ttyS0) */

#define FLAG_ARGS_CUT 1
#define FLAG_EXE_CUT 2
#define FLAG_CWD_CUT 4
#define FLAG_EXE_DELETED 8 /* the executable has no link left on disk */
#define FLAG_EXE_ID 16     /* exe_dev..exe_mtime_nsec name the executable's version */

#define S_IFMT 00170000
#define S_IFIFO 0010000

#define KIND_EXEC 1

struct exec_event {
	u32 kind;
	u32 flags;
	u32 pid;  /* the thread that called exec (the leader after de_thread) */
	u32 tgid;
	u32 ppid; /* real parent's tgid */
	u32 uid;
	u32 gid;
	u32 euid;
	u32 loginuid;
	u32 sessionid;
	u64 start_ns;        /* task start, ns since boot (CLOCK_BOOTTIME) */
	u64 parent_start_ns; /* the parent's, to tell a reused parent pid */
	u32 exe_len;         /* bytes of `exe` used: components leaf first, NUL-ended */
	u32 cwd_len;
	u32 filename_len; /* the path given to execve, NUL-ended */
	u32 args_len;     /* argv bytes, NUL-separated */
	u64 cgroup_id;    /* the cgroup v2 id (the cgroup directory's inode number) */
	u32 mnt_ns;       /* the mount namespace's inode number (as /proc/PID/ns/mnt) */
	u32 pid_ns;       /* the active pid namespace's (as /proc/PID/ns/pid) */
	u32 tty_major;    /* the controlling tty's device; 0 and an empty name: none */
	u32 tty_minor;
	char tty[TTY_NAME];
	u64 stdin_pipe;  /* the pipe inode on fd 0 (as /proc/PID/fd/0 names it); 0: not a pipe */
	u64 stdout_pipe; /* and on fd 1 */
	u64 exe_ino;     /* the executable's inode, size and change time, as stat gives them */
	u64 exe_size;
	long long exe_mtime_sec;
	u32 exe_mtime_nsec;
	u32 exe_dev;     /* the kernel's dev_t (major << 20 | minor) */
	char exe[PATH_MAX_OUT + NAME_READ];
	char cwd[PATH_MAX_OUT + NAME_READ];
	char filename[NAME_READ];
	char args[ARGS_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} events SEC(".maps");

/* Records the ring buffer had no room for. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

/* The event is built here (too large for the 512-byte stack), then copied out. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exec_event);
} scratch SEC(".maps");

static __always_inline void count_lost(void)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&lost, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* The inode number of the pipe open on `fd`, or 0 when it is not a pipe. The table is
 * the new program's (fds are set up before exec), read without the RCU lock: a racing
 * close gives a stale answer, never a fault (probe reads). */
static __always_inline u64 pipe_on(struct files_struct *files, unsigned int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file___ward **fds = BPF_CORE_READ(fdt, fd);
	struct file___ward *f = 0;
	if (!fds || bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) != 0 || !f)
		return 0;
	struct inode___ward *ino = BPF_CORE_READ(f, f_inode);
	if ((BPF_CORE_READ(ino, i_mode) & S_IFMT) != S_IFIFO)
		return 0;
	return BPF_CORE_READ(ino, i_ino);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ward_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	u32 zero = 0;
	struct exec_event *e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	e->kind = KIND_EXEC;
	e->flags = 0;
	e->pid = BPF_CORE_READ(task, pid);
	e->tgid = BPF_CORE_READ(task, tgid);
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	e->ppid = BPF_CORE_READ(parent, tgid);
	/* real_parent is the thread that forked: the process's start is its leader's. */
	e->parent_start_ns = BPF_CORE_READ(parent, group_leader, start_boottime);
	e->start_ns = BPF_CORE_READ(task, start_boottime);
	e->uid = BPF_CORE_READ(task, cred, uid.val);
	e->gid = BPF_CORE_READ(task, cred, gid.val);
	e->euid = BPF_CORE_READ(task, cred, euid.val);
	e->loginuid = BPF_CORE_READ(task, loginuid.val);
	e->sessionid = BPF_CORE_READ(task, sessionid);

	e->cgroup_id = bpf_get_current_cgroup_id();
	struct task_struct___ctx *ctask = (void *)task;
	e->mnt_ns = BPF_CORE_READ(ctask, nsproxy, mnt_ns, ns.inum);
	/* The active pid namespace is the pid's deepest level (task_active_pid_ns). */
	struct pid *tp = BPF_CORE_READ(ctask, thread_pid);
	unsigned int level = BPF_CORE_READ(tp, level);
	struct upid up = {};
	if (tp && bpf_core_read(&up, sizeof(up), &tp->numbers[level & 31]) == 0 && up.ns)
		e->pid_ns = BPF_CORE_READ(up.ns, ns.inum);
	else
		e->pid_ns = 0;
	struct tty_struct *tty = BPF_CORE_READ(ctask, signal, tty);
	e->tty[0] = 0;
	if (tty) {
		e->tty_major = BPF_CORE_READ(tty, driver, major);
		e->tty_minor = BPF_CORE_READ(tty, driver, minor_start) + BPF_CORE_READ(tty, index);
		bpf_probe_read_kernel_str(e->tty, sizeof(e->tty), &tty->name);
	} else {
		e->tty_major = 0;
		e->tty_minor = 0;
	}

	struct files_struct *files = BPF_CORE_READ(ctask, files);
	e->stdin_pipe = files ? pipe_on(files, 0) : 0;
	e->stdout_pipe = files ? pipe_on(files, 1) : 0;

	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	e->filename_len = n > 0 ? n : 0;

	u32 cut = 0;
	struct file *exe = BPF_CORE_READ(bprm, file);
	e->exe_len = walk_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), e->exe, &cut);
	if (cut)
		e->flags |= FLAG_EXE_CUT;
	if (BPF_CORE_READ(exe, f_path.dentry, d_inode, i_nlink) == 0)
		e->flags |= FLAG_EXE_DELETED;
	struct inode___ward *ei = BPF_CORE_READ((struct file___ward *)exe, f_inode);
	e->exe_ino = BPF_CORE_READ(ei, i_ino);
	e->exe_size = BPF_CORE_READ(ei, i_size);
	e->exe_dev = BPF_CORE_READ(ei, i_sb, s_dev);
	e->exe_mtime_sec = 0;
	e->exe_mtime_nsec = 0;
	if (bpf_core_field_exists(ei->i_mtime_sec)) {
		e->exe_mtime_sec = BPF_CORE_READ(ei, i_mtime_sec);
		e->exe_mtime_nsec = BPF_CORE_READ(ei, i_mtime_nsec);
		e->flags |= FLAG_EXE_ID;
	}
	cut = 0;
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	e->cwd_len = walk_path(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), e->cwd, &cut);
	if (cut)
		e->flags |= FLAG_CWD_CUT;

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	unsigned long len = end > start ? end - start : 0;
	if (len > ARGS_MAX) {
		len = ARGS_MAX;
		e->flags |= FLAG_ARGS_CUT;
	}
	u32 args_len = 0;
	if (len > 0 && bpf_probe_read_user(e->args, len & (ARGS_MAX - 1) ? len & (ARGS_MAX - 1) : ARGS_MAX, (void *)start) == 0)
		args_len = len;
	e->args_len = args_len;

	u64 size = __builtin_offsetof(struct exec_event, args) + (args_len & (ARGS_MAX * 2 - 1));
	if (size > sizeof(*e))
		size = sizeof(*e);
	if (bpf_ringbuf_output(&events, e, size, 0) != 0)
		count_lost();
	return 0;
}
