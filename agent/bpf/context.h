/* The kernel types the exec program reads for a process's context (namespaces,
 * controlling tty), kept apart from ward.h so that the other programs' objects do not
 * change with them. `task_struct___ctx` is a CO-RE flavour of task_struct (libbpf
 * drops the ___suffix when it relocates): only the fields read here. Include after
 * ward.h. */
#ifndef WARD_CONTEXT_H
#define WARD_CONTEXT_H

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct pid_namespace {
	struct ns_common ns;
};

struct nsproxy {
	struct mnt_namespace *mnt_ns;
};

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
};

struct tty_driver {
	int major;
	int minor_start;
};

struct tty_struct {
	int index;
	struct tty_driver *driver;
	char name[64];
};

struct signal_struct {
	struct tty_struct *tty;
};

/* The executable's identity (the hash cache's key without a stat) and the pipes on a
 * process's stdin and stdout. Flavours again, so that ward.h's `file` and `inode` (read
 * by the other programs) keep their shape. */
struct super_block {
	unsigned int s_dev;
};

struct inode___ward {
	unsigned short i_mode;
	unsigned long i_ino;
	long long i_size;
	struct super_block *i_sb;
	long long i_mtime_sec; /* 6.11+; older kernels: identity left out (flag unset) */
	unsigned int i_mtime_nsec;
};

struct file___ward {
	struct inode___ward *f_inode;
};

struct fdtable {
	unsigned int max_fds;
	struct file___ward **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct___ctx {
	struct nsproxy *nsproxy;
	struct signal_struct *signal;
	struct pid *thread_pid;
	struct files_struct *files;
};

#pragma clang attribute pop

#endif
