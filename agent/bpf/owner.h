/* Who did it, as the network programs (net.bpf.c, udp.bpf.c) record it: one layout,
 * decoded by agent/src/sensor/ebpf.rs (`NetOwner`) for both. Include after ward.h and
 * the bpf headers. */
#ifndef WARD_OWNER_H
#define WARD_OWNER_H

struct owner {
	u32 pid;
	u32 tgid;
	u32 uid;
	u32 pad;
	u64 start_ns; /* the process's start, ns since boot */
	char comm[16];
};

/* A port from network to host byte order (x86 is little-endian). */
static __always_inline u16 swap16(u16 v)
{
	return (v >> 8) | (v << 8);
}

/* The calling thread's process: pid, tgid, uid, its leader's start and name. */
static __always_inline void current_owner(struct owner *o)
{
	u64 id = bpf_get_current_pid_tgid();
	o->pid = (u32)id;
	o->tgid = id >> 32;
	o->uid = (u32)bpf_get_current_uid_gid();
	struct task_struct *task = (void *)bpf_get_current_task();
	/* The process's start (its leader's), not the calling thread's. */
	o->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

#endif
