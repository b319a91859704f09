/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * nrlab_buddy.h: the ioctl ABI of the kernel lab's allocator module
 * (nrlab_buddy.c), which replays an allocation trace on the kernel's own
 * gpu_buddy (drivers/gpu/buddy.c) and hands back the blocks.
 *
 * Mirrored by kernel-lab/src/buddy/abi.rs (zerocopy); its unit tests pin
 * every size.
 */
#ifndef NRLAB_BUDDY_H
#define NRLAB_BUDDY_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* Most ops per NRLAB_BUDDY_BATCH call. */
#define NRLAB_BUDDY_MAX_BATCH 65536
/* Most object ids per allocator (ids are 0 .. max_objects - 1). */
#define NRLAB_BUDDY_MAX_OBJECTS (1 << 22)
/* Orders NRLAB_BUDDY_STATS reports. */
#define NRLAB_BUDDY_ORDERS 64

/* gpu_buddy_init(size, chunk), after tearing down the previous one. */
struct nrlab_buddy_init {
	__u64 size;		/* in: bytes managed */
	__u64 chunk;		/* in: chunk_size */
	__u32 max_objects;	/* in: ids are below this */
	__s32 err;		/* out: 0 or -errno of gpu_buddy_init() */
};

/* One trace operation. */
#define NRLAB_BUDDY_OP_FREE		(1u << 0)	/* else alloc */
#define NRLAB_BUDDY_OP_CONTIGUOUS	(1u << 1)	/* GPU_BUDDY_CONTIGUOUS_ALLOCATION */
struct nrlab_buddy_op {
	__u32 id;
	__u32 flags;
	__u64 size;		/* alloc: bytes (rounded up to the chunk) */
};

/*
 * Runs count ops in order. results[i] (a __s32 each) gets 0 or -errno:
 * alloc: gpu_buddy_alloc_blocks()'s answer, -EEXIST for a live id;
 * free: -ENOENT when the id is not live (its alloc failed).
 */
struct nrlab_buddy_batch {
	__u64 ops;		/* in: user pointer to count struct nrlab_buddy_op */
	__u64 results;		/* in: user pointer to count __s32 */
	__u32 count;		/* in */
	__u32 done;		/* out: ops run */
};

/* A block: BAR offset and bytes. */
struct nrlab_buddy_block {
	__u64 offset;
	__u64 size;
};

/* The blocks of a live object, in list order (the buffer's linear order). */
struct nrlab_buddy_blocks {
	__u32 id;		/* in */
	__u32 count;		/* out: blocks the object has */
	__u64 max;		/* in: room in out[] */
	__u64 out;		/* in: user pointer to max struct nrlab_buddy_block */
};

/* The allocator's state: free blocks per order (both free trees). */
struct nrlab_buddy_stats {
	__u64 size;
	__u64 chunk;
	__u64 avail;
	__u32 max_order;
	__u32 live;		/* live objects */
	__u64 free_blocks[NRLAB_BUDDY_ORDERS];
};

#define NRLAB_BUDDY_IOC_MAGIC 0xb5
#define NRLAB_BUDDY_INIT   _IOWR(NRLAB_BUDDY_IOC_MAGIC, 1, struct nrlab_buddy_init)
#define NRLAB_BUDDY_BATCH  _IOWR(NRLAB_BUDDY_IOC_MAGIC, 2, struct nrlab_buddy_batch)
#define NRLAB_BUDDY_BLOCKS _IOWR(NRLAB_BUDDY_IOC_MAGIC, 3, struct nrlab_buddy_blocks)
#define NRLAB_BUDDY_STATS  _IOWR(NRLAB_BUDDY_IOC_MAGIC, 4, struct nrlab_buddy_stats)

#endif
