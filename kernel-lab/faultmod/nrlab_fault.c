// SPDX-License-Identifier: GPL-2.0
/*
 * nrlab_fault: the kernel lab's return-override fixture for the fault sweep
 * (`kernel-lab fault-sweep`).
 *
 * fail-nth only reaches allocations. The defects on the mapping's error
 * paths need calls that fail without allocating, so this module puts a
 * kprobe at the entry of each such function; while armed, the pre-handler
 * returns from the function at once with a chosen value (x86: set ax, pop
 * the return address into ip, return 1), and counts it in `fired`.
 *
 *   link_fail > 0   dma_iova_link() returns -ENOMEM (counts down)
 *   try_fail > 0    dma_iova_try_alloc() returns false: the per-range path
 *                   (counts down)
 *   map_fail > 0    dma_map_phys() returns DMA_MAPPING_ERROR, after
 *                   map_pass calls went through (both count down)
 *
 * Every probe has a post_handler that does nothing: a probe with one is
 * never jump-optimised (CONFIG_OPTPROBES), and an optimised probe ignores
 * the pre-handler's change of ip, so the override would miss.
 */
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/dma-mapping.h>

static int link_fail;
module_param(link_fail, int, 0644);
MODULE_PARM_DESC(link_fail, "dma_iova_link() calls to fail with -ENOMEM");
static int try_fail;
module_param(try_fail, int, 0644);
MODULE_PARM_DESC(try_fail, "dma_iova_try_alloc() calls to answer false");
static int map_pass;
module_param(map_pass, int, 0644);
MODULE_PARM_DESC(map_pass, "dma_map_phys() calls to let through before failing");
static int map_fail;
module_param(map_fail, int, 0644);
MODULE_PARM_DESC(map_fail, "dma_map_phys() calls to fail with DMA_MAPPING_ERROR");
static int fired;
module_param(fired, int, 0444);
MODULE_PARM_DESC(fired, "overrides so far");

/* Return from the probed function with `v`, without running it. */
static void return_now(struct pt_regs *regs, unsigned long v)
{
	WRITE_ONCE(fired, READ_ONCE(fired) + 1);
	regs->ax = v;
	regs->ip = *(unsigned long *)regs->sp;
	regs->sp += sizeof(unsigned long);
}

/* Take one from a countdown; true if it was armed. */
static bool take(int *count)
{
	if (READ_ONCE(*count) <= 0)
		return false;
	WRITE_ONCE(*count, READ_ONCE(*count) - 1);
	return true;
}

static void post_nop(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
}

static int pre_link(struct kprobe *p, struct pt_regs *regs)
{
	if (!take(&link_fail))
		return 0;
	return_now(regs, (unsigned long)-ENOMEM);
	return 1;
}

static int pre_try(struct kprobe *p, struct pt_regs *regs)
{
	if (!take(&try_fail))
		return 0;
	return_now(regs, 0);
	return 1;
}

static int pre_map(struct kprobe *p, struct pt_regs *regs)
{
	if (READ_ONCE(map_fail) <= 0 || take(&map_pass))
		return 0;
	take(&map_fail);
	return_now(regs, DMA_MAPPING_ERROR);
	return 1;
}

static struct kprobe kp_link = {
	.symbol_name = "dma_iova_link", .pre_handler = pre_link, .post_handler = post_nop,
};
static struct kprobe kp_try = {
	.symbol_name = "dma_iova_try_alloc", .pre_handler = pre_try, .post_handler = post_nop,
};
static struct kprobe kp_map = {
	.symbol_name = "dma_map_phys", .pre_handler = pre_map, .post_handler = post_nop,
};
static struct kprobe *probes[] = { &kp_link, &kp_try, &kp_map };

static int __init nrlab_fault_init(void)
{
	return register_kprobes(probes, ARRAY_SIZE(probes));
}

static void __exit nrlab_fault_exit(void)
{
	unregister_kprobes(probes, ARRAY_SIZE(probes));
}

module_init(nrlab_fault_init);
module_exit(nrlab_fault_exit);
MODULE_DESCRIPTION("kernel lab: return overrides for the dma-buf fault sweep");
MODULE_LICENSE("GPL");
