// SPDX-License-Identifier: GPL-2.0
/* UDP sockets and DNS messages for Ward's network sensor, from cgroup programs on
 * the root cgroup v2 (no kprobes, no fentry, no syscall tracepoints: they cost only
 * UDP sockets and port-53 packets, not every system call):
 *
 * - cgroup/connect4, connect6: a UDP socket connected (DNS resolvers connect first),
 *   in the connecting process;
 * - cgroup/sendmsg4, sendmsg6: a datagram sent with an address on an unconnected UDP
 *   socket (sendto), in the sending process;
 * - cgroup/bind4, bind6 and cgroup/post_bind4, post_bind6: a UDP socket bound to a
 *   port it asked for (a listener; a bind to port 0 is a client's ephemeral port and
 *   is not reported), in the binding process;
 * - cgroup_skb/egress, ingress: the first 512 bytes of UDP port-53 payloads (queries
 *   out, responses in), v4 and v6, with the socket's cookie and the process that
 *   connected or sent on that socket (kept by cookie above: the skb hooks may run
 *   outside the process).
 *
 * EVERY PROGRAM HERE RETURNS 1 (allow), on every path: a cgroup program that returns
 * 0 refuses the connect, the send, the bind or the packet for the whole host. They
 * only observe. They are attached through BPF links owned by the agent's process, so
 * they are detached when it exits, crashed or not.
 *
 * A (process, operation, peer) seen less than `dedup_ns` ago is not sent again (set
 * at load from `network_dedup_ms`): a busy UDP sender costs one map lookup per
 * datagram, not one record. With `report_udp` 0 (UDP events off, DNS on) the socket
 * hooks only remember who uses each socket.
 *
 * Layouts are `struct udp_event` (as net.bpf.c's `net_event`, the socket's cookie in
 * place of its address), `struct exe_event` (as net.bpf.c's) and `struct dns_event`
 * (little-endian, decoded by agent/src/sensor/netcg.rs; change both together). A full
 * ring buffer is counted in `udp_lost`. */
#include "ward.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "path.h"
#include "owner.h"

char LICENSE[] SEC("license") = "GPL";

/* The UAPI context structs (linux/bpf.h), as far as these programs read them. Their
 * layout is ABI: the verifier rewrites each access by its offset. */
struct bpf_sock_addr {
	u32 user_family;
	u32 user_ip4;    /* network byte order */
	u32 user_ip6[4]; /* network byte order */
	u32 user_port;   /* network byte order */
	u32 family;
	u32 type;
	u32 protocol;
};

struct bpf_sock {
	u32 bound_dev_if;
	u32 family;
	u32 type;
	u32 protocol;
	u32 mark;
	u32 priority;
	u32 src_ip4;
	u32 src_ip6[4];
	u32 src_port; /* host byte order */
};

struct __sk_buff {
	u32 len;
};

#define KIND_NET_EXE 3
#define KIND_UDP 4
#define KIND_DNS 5

#define OP_CONNECT 1
#define OP_LISTEN 3

#define UDP_FLAG_SENDTO 2 /* a datagram sent with an address, not a connect */

#define DNS_QUERY 1    /* egress to port 53 */
#define DNS_RESPONSE 2 /* ingress from port 53 */
#define DNS_MAX 512

#define SOCK_DGRAM 2
#define IPPROTO_UDP 17
#define AF_INET 2
#define AF_INET6 10

const volatile u64 dedup_ns = 0;
/* 0: the socket hooks only keep who uses each socket (for DNS), sending nothing. */
const volatile u8 report_udp = 1;
/* The agent itself: its QUIC link sends a datagram with an address each time, which
 * would otherwise come back as its own events. */
const volatile u32 self_tgid = 0;

struct udp_event {
	u32 kind;
	u8 op;
	u8 family;
	u8 flags;
	u8 pad;
	u16 sport; /* host byte order */
	u16 dport;
	u32 pad2;
	u8 saddr[16];
	u8 daddr[16];
	struct owner who;
	u64 cookie;
};

struct exe_event {
	u32 kind;
	u32 exe_len;
	u64 sk; /* the socket's cookie */
	u32 tgid;
	u32 cut;
	char exe[PATH_MAX_OUT + NAME_READ];
};

struct dns_event {
	u32 kind;
	u8 dir;
	u8 family;
	u16 len; /* payload bytes in `data` */
	u16 sport;
	u16 dport;
	u32 wire_len; /* the payload's length in the packet */
	u8 saddr[16];
	u8 daddr[16];
	struct owner who; /* zero when the socket's process is unknown */
	u64 cookie;
	u8 data[DNS_MAX];
};

struct recent_key {
	u32 tgid;
	u8 op;
	u8 family;
	u16 port;
	u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exe_event);
} udp_exe_scratch SEC(".maps");

/* A DNS record is built here and sent as long as its message (most are under 100
 * bytes): a fixed 608-byte reservation per message filled the ring four times
 * sooner in the benchmark's burst of lookups. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct dns_event);
} dns_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} udp_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} udp_lost SEC(".maps");

/* The process that last connected or sent on a UDP socket, by cookie (LRU: a closed
 * socket only ages out). The skb programs name DNS messages after it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct owner);
} udp_owners SEC(".maps");

/* When each (process, operation, peer) was last sent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct recent_key);
	__type(value, u64);
} udp_recent SEC(".maps");

/* UDP sockets bound to a port they named, between bind and post_bind. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, u8);
} udp_binding SEC(".maps");

static __always_inline void count_lost(void)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&udp_lost, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Remembers who uses the socket (for the DNS programs), writing only on a change. */
static __always_inline void remember_owner(u64 cookie, const struct owner *o)
{
	struct owner *old = bpf_map_lookup_elem(&udp_owners, &cookie);
	if (old && old->tgid == o->tgid && old->pid == o->pid && old->start_ns == o->start_ns)
		return;
	bpf_map_update_elem(&udp_owners, &cookie, o, 0);
}

/* True when the same (process, operation, peer) was sent less than dedup_ns ago. */
static __always_inline int repeated(const struct udp_event *e)
{
	if (dedup_ns == 0)
		return 0;
	struct recent_key k = {};
	k.tgid = e->who.tgid;
	k.op = e->op;
	k.family = e->family;
	if (e->op == OP_LISTEN) {
		k.port = e->sport;
		__builtin_memcpy(k.addr, e->saddr, 16);
	} else {
		k.port = e->dport;
		__builtin_memcpy(k.addr, e->daddr, 16);
	}
	u64 now = bpf_ktime_get_ns();
	u64 *last = bpf_map_lookup_elem(&udp_recent, &k);
	if (last && now - *last < dedup_ns)
		return 1;
	bpf_map_update_elem(&udp_recent, &k, &now, 0);
	return 0;
}

/* The current process's executable, for the socket `cookie`. */
static __always_inline void send_exe(u64 cookie, u32 tgid)
{
	u32 zero = 0;
	struct exe_event *e = bpf_map_lookup_elem(&udp_exe_scratch, &zero);
	if (!e)
		return;
	e->kind = KIND_NET_EXE;
	e->sk = cookie;
	e->tgid = tgid;
	u32 cut = 0;
	struct task_struct *task = (void *)bpf_get_current_task();
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	e->exe_len = walk_path(BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), e->exe, &cut);
	e->cut = cut;
	u64 size = __builtin_offsetof(struct exe_event, exe) + (e->exe_len & (PATH_MAX_OUT * 2 - 1));
	if (size > sizeof(*e))
		size = sizeof(*e);
	if (bpf_ringbuf_output(&udp_events, e, size, 0) != 0)
		count_lost();
}

/* Sends `e` (and the executable before it) unless it repeats a recent one. */
static __always_inline void send_udp(struct udp_event *e)
{
	if (!report_udp || e->who.tgid == self_tgid || repeated(e))
		return;
	send_exe(e->cookie, e->who.tgid);
	if (bpf_ringbuf_output(&udp_events, e, sizeof(*e), 0) != 0)
		count_lost();
}

/* A UDP connect or sendto, from the address the process gave. */
static __always_inline void on_sock_addr(struct bpf_sock_addr *ctx, u8 family, u8 flags)
{
	if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP)
		return;
	struct udp_event e = {};
	e.kind = KIND_UDP;
	e.op = OP_CONNECT;
	e.family = family;
	e.flags = flags;
	e.dport = swap16((u16)ctx->user_port);
	if (family == 4) {
		u32 a = ctx->user_ip4;
		__builtin_memcpy(e.daddr, &a, 4);
	} else {
		u32 a[4];
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
		__builtin_memcpy(e.daddr, a, 16);
	}
	e.cookie = bpf_get_socket_cookie(ctx);
	current_owner(&e.who);
	remember_owner(e.cookie, &e.who);
	send_udp(&e);
}

SEC("cgroup/connect4")
int ward_udp_connect4(struct bpf_sock_addr *ctx)
{
	on_sock_addr(ctx, 4, 0);
	return 1;
}

SEC("cgroup/connect6")
int ward_udp_connect6(struct bpf_sock_addr *ctx)
{
	on_sock_addr(ctx, 6, 0);
	return 1;
}

SEC("cgroup/sendmsg4")
int ward_udp_sendmsg4(struct bpf_sock_addr *ctx)
{
	on_sock_addr(ctx, 4, UDP_FLAG_SENDTO);
	return 1;
}

SEC("cgroup/sendmsg6")
int ward_udp_sendmsg6(struct bpf_sock_addr *ctx)
{
	on_sock_addr(ctx, 6, UDP_FLAG_SENDTO);
	return 1;
}

/* A bind to a named port: remembered until post_bind says it succeeded. */
static __always_inline void on_bind(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_DGRAM || ctx->protocol != IPPROTO_UDP || ctx->user_port == 0)
		return;
	u64 cookie = bpf_get_socket_cookie(ctx);
	u8 one = 1;
	bpf_map_update_elem(&udp_binding, &cookie, &one, 0);
}

SEC("cgroup/bind4")
int ward_udp_bind4(struct bpf_sock_addr *ctx)
{
	on_bind(ctx);
	return 1;
}

SEC("cgroup/bind6")
int ward_udp_bind6(struct bpf_sock_addr *ctx)
{
	on_bind(ctx);
	return 1;
}

static __always_inline void on_post_bind(struct bpf_sock *sk, u8 family)
{
	if (sk->type != SOCK_DGRAM || sk->protocol != IPPROTO_UDP)
		return;
	u64 cookie = bpf_get_socket_cookie(sk);
	if (!bpf_map_lookup_elem(&udp_binding, &cookie))
		return;
	bpf_map_delete_elem(&udp_binding, &cookie);
	struct udp_event e = {};
	e.kind = KIND_UDP;
	e.op = OP_LISTEN;
	e.family = family;
	e.sport = (u16)sk->src_port;
	if (family == 4) {
		u32 a = sk->src_ip4;
		__builtin_memcpy(e.saddr, &a, 4);
	} else {
		u32 a[4];
		a[0] = sk->src_ip6[0];
		a[1] = sk->src_ip6[1];
		a[2] = sk->src_ip6[2];
		a[3] = sk->src_ip6[3];
		__builtin_memcpy(e.saddr, a, 16);
	}
	e.cookie = cookie;
	current_owner(&e.who);
	remember_owner(cookie, &e.who);
	send_udp(&e);
}

SEC("cgroup/post_bind4")
int ward_udp_post_bind4(struct bpf_sock *sk)
{
	on_post_bind(sk, 4);
	return 1;
}

SEC("cgroup/post_bind6")
int ward_udp_post_bind6(struct bpf_sock *sk)
{
	on_post_bind(sk, 6);
	return 1;
}

/* A UDP packet to (egress) or from (ingress) port 53: its payload's first bytes. */
static __always_inline void on_skb(struct __sk_buff *skb, u8 dir)
{
	u8 ver;
	if (bpf_skb_load_bytes(skb, 0, &ver, 1) < 0)
		return;
	u32 l4;
	u8 family;
	u8 addrs[32] = {};
	if ((ver >> 4) == 4) {
		u8 h[20];
		if (bpf_skb_load_bytes(skb, 0, h, 20) < 0)
			return;
		/* Not UDP, or a fragment after the first (no UDP header in it). */
		if (h[9] != IPPROTO_UDP || ((h[6] & 0x1f) | h[7]) != 0)
			return;
		l4 = (h[0] & 0xf) * 4;
		family = 4;
		__builtin_memcpy(addrs, &h[12], 4);
		__builtin_memcpy(&addrs[16], &h[16], 4);
	} else if ((ver >> 4) == 6) {
		u8 h[40];
		if (bpf_skb_load_bytes(skb, 0, h, 40) < 0)
			return;
		/* Extension headers are not walked: a DNS message has none in practice. */
		if (h[6] != IPPROTO_UDP)
			return;
		l4 = 40;
		family = 6;
		__builtin_memcpy(addrs, &h[8], 32);
	} else {
		return;
	}
	u16 ports[2];
	if (bpf_skb_load_bytes(skb, l4, ports, 4) < 0)
		return;
	u16 sport = swap16(ports[0]);
	u16 dport = swap16(ports[1]);
	if (dir == DNS_QUERY ? dport != 53 : sport != 53)
		return;
	u32 at = l4 + 8;
	if (skb->len <= at)
		return;
	u32 wire = skb->len - at;
	u32 n = wire;
	if (n > DNS_MAX)
		n = DNS_MAX;
	u32 zero = 0;
	struct dns_event *e = bpf_map_lookup_elem(&dns_scratch, &zero);
	if (!e)
		return;
	e->kind = KIND_DNS;
	e->dir = dir;
	e->family = family;
	e->sport = sport;
	e->dport = dport;
	e->wire_len = wire;
	__builtin_memcpy(e->saddr, addrs, 16);
	__builtin_memcpy(e->daddr, &addrs[16], 16);
	e->cookie = bpf_get_socket_cookie(skb);
	struct owner *o = bpf_map_lookup_elem(&udp_owners, &e->cookie);
	if (o)
		__builtin_memcpy(&e->who, o, sizeof(*o));
	else
		__builtin_memset(&e->who, 0, sizeof(e->who));
	/* The verifier needs the length's bounds on the very register passed: hide the
	 * clamp above from clang so the mask is kept. */
	asm volatile("" : "+r"(n));
	n &= 0x3ff;
	if (n == 0 || n > DNS_MAX || bpf_skb_load_bytes(skb, at, e->data, n) < 0)
		return;
	e->len = n;
	if (bpf_ringbuf_output(&udp_events, e, __builtin_offsetof(struct dns_event, data) + n, 0) != 0)
		count_lost();
}

SEC("cgroup_skb/egress")
int ward_dns_egress(struct __sk_buff *skb)
{
	on_skb(skb, DNS_QUERY);
	return 1;
}

SEC("cgroup_skb/ingress")
int ward_dns_ingress(struct __sk_buff *skb)
{
	on_skb(skb, DNS_RESPONSE);
	return 1;
}
