// SPDX-License-Identifier: GPL-2.0
/* TCP connection events for Ward's network sensor, from one tracepoint,
 * sock/inet_sock_set_state (a BTF tracepoint: no kprobes, no function trampolines,
 * no tracefs; kernels built without kprobes, or that refuse fentry, still run it):
 *
 * - connect: CLOSE -> SYN_SENT runs in the connecting process (tcp_v4_connect /
 *   tcp_v6_connect), before the source port is chosen; who connected is kept by socket
 *   and the event is sent when the socket leaves SYN_SENT (established, or refused),
 *   with both ends filled in;
 * - listen: -> LISTEN runs in the process that called listen();
 * - accept: SYN_RECV -> ESTABLISHED of the new connection runs in softirq, not in the
 *   accepting process: it is sent without a process and the agent names the process
 *   that listens on that port (from the listen events, and /proc at start).
 *
 * The connecting or listening process's executable is sent just before, in process
 * context, as an `exe_event` naming the socket, so a process that execs right after
 * connecting is still named by the program that connected.
 *
 * Layout is `struct net_event` and `struct exe_event` (little-endian, decoded by agent/src/sensor/ebpf.rs;
 * change both together). A full ring buffer is counted in `net_lost`. */
#include "ward.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "path.h"
#include "owner.h"

char LICENSE[] SEC("license") = "GPL";

#define KIND_NET 2
#define KIND_NET_EXE 3

#define OP_CONNECT 1
#define OP_ACCEPT 2
#define OP_LISTEN 3

#define AF_INET6 10

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

#define NET_FLAG_ESTABLISHED 1 /* a connect that succeeded */

struct net_event {
	u32 kind;
	u8 op;
	u8 family; /* 4 or 6 */
	u8 flags;
	u8 pad;
	u16 sport; /* host byte order */
	u16 dport;
	u32 pad2;
	u8 saddr[16]; /* v4 in the first 4 bytes */
	u8 daddr[16];
	struct owner who; /* zero for accept */
	u64 sk;           /* the socket, to pair with its exe_event */
};

struct exe_event {
	u32 kind;
	u32 exe_len; /* bytes of `exe` used: components leaf first, NUL-ended */
	u64 sk;
	u32 tgid;
	u32 cut; /* the path was deeper or longer than kept */
	char exe[PATH_MAX_OUT + NAME_READ];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exe_event);
} exe_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 512 * 1024);
} net_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} net_lost SEC(".maps");

/* Who is connecting on a socket in SYN_SENT (LRU: a socket freed without leaving
 * SYN_SENT only ages out). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct owner);
} connecting SEC(".maps");

static __always_inline void count_lost(void)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&net_lost, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* The current process's executable, for the socket `sk`. */
static __always_inline void send_exe(const struct sock *sk)
{
	u32 zero = 0;
	struct exe_event *e = bpf_map_lookup_elem(&exe_scratch, &zero);
	if (!e)
		return;
	e->kind = KIND_NET_EXE;
	e->sk = (u64)sk;
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	u32 cut = 0;
	struct task_struct *task = (void *)bpf_get_current_task();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	e->exe_len = walk_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), e->exe, &cut);
	e->cut = cut;
	u64 size = __builtin_offsetof(struct exe_event, exe) + (e->exe_len & (PATH_MAX_OUT * 2 - 1));
	if (size > sizeof(*e))
		size = sizeof(*e);
	if (bpf_ringbuf_output(&net_events, e, size, 0) != 0)
		count_lost();
}

static __always_inline void send(const struct sock *sk, u8 op, u8 flags, const struct owner *who)
{
	struct net_event *e = bpf_ringbuf_reserve(&net_events, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = KIND_NET;
	e->op = op;
	e->flags = flags;
	e->sk = (u64)sk;
	if (who)
		__builtin_memcpy(&e->who, who, sizeof(*who));
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = swap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET6) {
		e->family = 6;
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		e->family = 4;
		BPF_CORE_READ_INTO((u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(ward_tcp_state, const struct sock *sk, const int oldstate, const int newstate)
{
	u64 key = (u64)sk;
	if (newstate == TCP_SYN_SENT) {
		send_exe(sk);
		struct owner o = {};
		current_owner(&o);
		bpf_map_update_elem(&connecting, &key, &o, 0);
	} else if (oldstate == TCP_SYN_SENT) {
		struct owner *o = bpf_map_lookup_elem(&connecting, &key);
		if (o) {
			send(sk, OP_CONNECT, newstate == TCP_ESTABLISHED ? NET_FLAG_ESTABLISHED : 0, o);
			bpf_map_delete_elem(&connecting, &key);
		}
	} else if (newstate == TCP_LISTEN) {
		send_exe(sk);
		struct owner o = {};
		current_owner(&o);
		send(sk, OP_LISTEN, 0, &o);
	} else if (oldstate == TCP_SYN_RECV && newstate == TCP_ESTABLISHED) {
		send(sk, OP_ACCEPT, 0, 0);
	}
	return 0;
}
