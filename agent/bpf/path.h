/* Paths from the kernel's dentries, for Ward's BPF programs: walk_path writes a
 * path's components leaf first, each NUL-ended (userspace joins them in reverse),
 * crossing mount points, under bpf_loop so the verifier checks one step, not each
 * depth. Include after ward.h and the bpf headers. */
#ifndef WARD_PATH_H
#define WARD_PATH_H

#define PATH_MAX_OUT 1024 /* bytes of path components kept per path */
#define NAME_READ 256     /* one component's read bound (NAME_MAX + NUL) */
#define PATH_DEPTH 32     /* components walked per path */

struct walk {
	struct dentry *dentry;
	struct mount *mnt;
	char *out;
	u32 off;
	u32 cut;
};

/* One step up the path: emits the current component, or crosses a mount point, or
 * stops at the root. Runs under bpf_loop so the verifier checks it once, not per depth. */
static long walk_step(u32 i, struct walk *w)
{
	struct dentry *dentry = w->dentry;
	struct mount *mnt = w->mnt;
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	if (dentry == mnt_root || dentry == parent) {
		struct mount *mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != mnt_root || mnt_parent == mnt || !mnt_parent)
			return 1; /* the root of the namespace */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = mnt_parent;
		return 0;
	}
	u32 off = w->off;
	if (off >= PATH_MAX_OUT) {
		w->cut = 1;
		return 1;
	}
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	long n = bpf_probe_read_kernel_str(&w->out[off & (PATH_MAX_OUT - 1)], NAME_READ, name);
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->dentry = parent;
	return 0;
}

/* Walks `dentry` up to the root, crossing mount points, writing each component's name
 * leaf first and NUL-ended into `out`; userspace joins them in reverse. Returns the
 * bytes used; sets *cut when the path was deeper or longer than kept. */
static __always_inline u32 walk_path(struct dentry *dentry, struct vfsmount *vfsmnt, char *out, u32 *cut)
{
	struct walk w = {
		.dentry = dentry,
		.mnt = (void *)vfsmnt - __builtin_preserve_field_info(((struct mount *)0)->mnt, 0),
		.out = out,
		.off = 0,
		.cut = 0,
	};
	long steps = bpf_loop(PATH_DEPTH, walk_step, &w, 0);
	if (w.cut || steps >= PATH_DEPTH)
		*cut = 1;
	return w.off;
}

#endif
