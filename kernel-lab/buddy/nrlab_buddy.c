// SPDX-License-Identifier: GPL-2.0
/*
 * nrlab_buddy.c: the kernel lab's allocator module. It runs an allocation
 * trace on the kernel's own GPU buddy allocator (drivers/gpu/buddy.c), so
 * that the framebuffer experiment's workload can be measured on the real
 * allocator beside the Rust model of it (rfc/src/buddy.rs).
 *
 * One allocator at a time, set up by NRLAB_BUDDY_INIT for a (BAR size,
 * chunk); user space sends the trace in batches (NRLAB_BUDDY_BATCH), reads
 * back the blocks of the objects it cares about (NRLAB_BUDDY_BLOCKS) and
 * the free blocks per order (NRLAB_BUDDY_STATS). Every allocation is what a
 * DRM driver asks for: gpu_buddy_alloc_blocks(mm, 0, size, len, chunk,
 * blocks, flags) with flags 0 or GPU_BUDDY_CONTIGUOUS_ALLOCATION, so the
 * kernel's roundup, __alloc_contig_try_harder() and trim all apply.
 *
 * The ABI is nrlab_buddy.h. Lab code, never for a production kernel.
 */

#include <linux/module.h>
#include <linux/miscdevice.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/gpu_buddy.h>

#include "nrlab_buddy.h"

struct nrlab_buddy {
	struct mutex lock;
	bool ready;			/* mm is initialised */
	struct gpu_buddy mm;
	struct list_head *objects;	/* per id: its blocks; empty = not live */
	u32 max_objects;
	u32 live;
};

static struct nrlab_buddy nb = {
	.lock = __MUTEX_INITIALIZER(nb.lock),
};

/* Frees every live object and the allocator. Called with the lock held. */
static void nrlab_teardown(void)
{
	u32 i;

	if (!nb.ready)
		return;
	for (i = 0; i < nb.max_objects; i++)
		if (!list_empty(&nb.objects[i]))
			gpu_buddy_free_list(&nb.mm, &nb.objects[i], 0);
	gpu_buddy_fini(&nb.mm);
	kvfree(nb.objects);
	nb.objects = NULL;
	nb.max_objects = 0;
	nb.live = 0;
	nb.ready = false;
}

static long nrlab_init(struct nrlab_buddy_init __user *uarg)
{
	struct nrlab_buddy_init a;
	u32 i;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	nrlab_teardown();
	if (!a.max_objects || a.max_objects > NRLAB_BUDDY_MAX_OBJECTS)
		return -EINVAL;
	nb.objects = kvcalloc(a.max_objects, sizeof(*nb.objects), GFP_KERNEL);
	if (!nb.objects)
		return -ENOMEM;
	for (i = 0; i < a.max_objects; i++)
		INIT_LIST_HEAD(&nb.objects[i]);
	a.err = gpu_buddy_init(&nb.mm, a.size, a.chunk);
	if (a.err) {
		kvfree(nb.objects);
		nb.objects = NULL;
	} else {
		nb.max_objects = a.max_objects;
		nb.ready = true;
	}
	if (copy_to_user(uarg, &a, sizeof(a)))
		return -EFAULT;
	return 0;
}

static s32 nrlab_op(const struct nrlab_buddy_op *op)
{
	struct list_head *blocks;
	unsigned long flags = 0;
	u64 len;
	int err;

	if (op->id >= nb.max_objects)
		return -ERANGE;
	blocks = &nb.objects[op->id];
	if (op->flags & NRLAB_BUDDY_OP_FREE) {
		if (list_empty(blocks))
			return -ENOENT;
		gpu_buddy_free_list(&nb.mm, blocks, 0);
		nb.live--;
		return 0;
	}
	if (!list_empty(blocks))
		return -EEXIST;
	if (!op->size || op->size > nb.mm.size)
		return -EINVAL;
	/* Drivers hand the allocator whole chunks (the model rounds the same way). */
	len = round_up(op->size, nb.mm.chunk_size);
	if (op->flags & NRLAB_BUDDY_OP_CONTIGUOUS)
		flags |= GPU_BUDDY_CONTIGUOUS_ALLOCATION;
	err = gpu_buddy_alloc_blocks(&nb.mm, 0, nb.mm.size, len, nb.mm.chunk_size, blocks, flags);
	if (err)
		return err;
	nb.live++;
	return 0;
}

static long nrlab_batch(struct nrlab_buddy_batch __user *uarg)
{
	struct nrlab_buddy_batch a;
	struct nrlab_buddy_op *ops;
	s32 *res;
	long ret = 0;
	u32 i;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (!nb.ready)
		return -ENODEV;
	if (a.count > NRLAB_BUDDY_MAX_BATCH)
		return -E2BIG;
	ops = kvmalloc_array(a.count ?: 1, sizeof(*ops), GFP_KERNEL);
	res = kvmalloc_array(a.count ?: 1, sizeof(*res), GFP_KERNEL);
	if (!ops || !res) {
		ret = -ENOMEM;
		goto out;
	}
	if (copy_from_user(ops, u64_to_user_ptr(a.ops), a.count * sizeof(*ops))) {
		ret = -EFAULT;
		goto out;
	}
	for (i = 0; i < a.count; i++) {
		res[i] = nrlab_op(&ops[i]);
		cond_resched();
	}
	a.done = a.count;
	if (copy_to_user(u64_to_user_ptr(a.results), res, a.count * sizeof(*res)) ||
	    copy_to_user(uarg, &a, sizeof(a)))
		ret = -EFAULT;
out:
	kvfree(ops);
	kvfree(res);
	return ret;
}

static long nrlab_blocks(struct nrlab_buddy_blocks __user *uarg)
{
	struct nrlab_buddy_blocks a;
	struct nrlab_buddy_block __user *out;
	struct gpu_buddy_block *block;
	u32 n = 0;

	if (copy_from_user(&a, uarg, sizeof(a)))
		return -EFAULT;
	if (!nb.ready)
		return -ENODEV;
	if (a.id >= nb.max_objects)
		return -ERANGE;
	out = u64_to_user_ptr(a.out);
	list_for_each_entry(block, &nb.objects[a.id], link) {
		if (n < a.max) {
			struct nrlab_buddy_block b = {
				.offset = gpu_buddy_block_offset(block),
				.size = gpu_buddy_block_size(&nb.mm, block),
			};

			if (copy_to_user(&out[n], &b, sizeof(b)))
				return -EFAULT;
		}
		n++;
	}
	a.count = n;
	if (copy_to_user(uarg, &a, sizeof(a)))
		return -EFAULT;
	return 0;
}

static long nrlab_stats(struct nrlab_buddy_stats __user *uarg)
{
	struct nrlab_buddy_stats *s;
	unsigned int tree, order;
	struct rb_node *node;
	long ret = 0;

	if (!nb.ready)
		return -ENODEV;
	s = kzalloc(sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	s->size = nb.mm.size;
	s->chunk = nb.mm.chunk_size;
	s->avail = nb.mm.avail;
	s->max_order = nb.mm.max_order;
	s->live = nb.live;
	/* Both trees: this module never frees as cleared, but count what is there. */
	for_each_free_tree(tree)
		for (order = 0; order <= nb.mm.max_order && order < NRLAB_BUDDY_ORDERS; order++)
			for (node = rb_first(&nb.mm.free_trees[tree][order]); node; node = rb_next(node))
				s->free_blocks[order]++;
	if (copy_to_user(uarg, s, sizeof(*s)))
		ret = -EFAULT;
	kfree(s);
	return ret;
}

static long nrlab_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	long ret;

	mutex_lock(&nb.lock);
	switch (cmd) {
	case NRLAB_BUDDY_INIT:
		ret = nrlab_init(uarg);
		break;
	case NRLAB_BUDDY_BATCH:
		ret = nrlab_batch(uarg);
		break;
	case NRLAB_BUDDY_BLOCKS:
		ret = nrlab_blocks(uarg);
		break;
	case NRLAB_BUDDY_STATS:
		ret = nrlab_stats(uarg);
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&nb.lock);
	return ret;
}

static const struct file_operations nrlab_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = nrlab_ioctl,
};

static struct miscdevice nrlab_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "nrlab_buddy",
	.fops = &nrlab_fops,
};

static int __init nrlab_buddy_init_module(void)
{
	return misc_register(&nrlab_misc);
}

static void __exit nrlab_buddy_exit_module(void)
{
	misc_deregister(&nrlab_misc);
	mutex_lock(&nb.lock);
	nrlab_teardown();
	mutex_unlock(&nb.lock);
}

module_init(nrlab_buddy_init_module);
module_exit(nrlab_buddy_exit_module);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nr-ranges kernel lab: trace replay on the kernel's gpu_buddy allocator");
