// SPDX-License-Identifier: GPL-2.0
/*
 * Scratch fault injector for issue 14's notes (kprobes at function entry that
 * return without running the function):
 *   arm > 0:      dma_iova_link() returns -ENOMEM (counts down)
 *   arm_try > 0:  dma_iova_try_alloc() returns false (counts down)
 *   map_fail > 0: after map_pass calls of dma_map_phys() pass, it returns
 *                 DMA_MAPPING_ERROR (both count down)
 * A dummy post_handler keeps the probes from being jump-optimized.
 */
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/atomic.h>
#include <linux/dma-mapping.h>

static int arm;
module_param(arm, int, 0644);
static int fired;
module_param(fired, int, 0444);
static int arm_try, map_pass, map_fail;
module_param(arm_try, int, 0644);
module_param(map_pass, int, 0644);
module_param(map_fail, int, 0644);

static void ret_now(struct pt_regs *regs, unsigned long v)
{
	WRITE_ONCE(fired, READ_ONCE(fired) + 1);
	regs->ax = v;
	regs->ip = *(unsigned long *)regs->sp;
	regs->sp += sizeof(unsigned long);
}

static void post(struct kprobe *p, struct pt_regs *regs, unsigned long flags)
{
}

static int pre_try(struct kprobe *p, struct pt_regs *regs)
{
	if (READ_ONCE(arm_try) <= 0)
		return 0;
	WRITE_ONCE(arm_try, READ_ONCE(arm_try) - 1);
	ret_now(regs, 0);
	return 1;
}

static int pre_map(struct kprobe *p, struct pt_regs *regs)
{
	if (READ_ONCE(map_fail) <= 0)
		return 0;
	if (READ_ONCE(map_pass) > 0) {
		WRITE_ONCE(map_pass, READ_ONCE(map_pass) - 1);
		return 0;
	}
	WRITE_ONCE(map_fail, READ_ONCE(map_fail) - 1);
	ret_now(regs, DMA_MAPPING_ERROR);
	return 1;
}

static int pre(struct kprobe *p, struct pt_regs *regs)
{
	if (READ_ONCE(arm) <= 0)
		return 0;
	WRITE_ONCE(arm, READ_ONCE(arm) - 1);
	ret_now(regs, (unsigned long)-ENOMEM);
	return 1;
}

static struct kprobe kp = { .symbol_name = "dma_iova_link", .pre_handler = pre, .post_handler = post };
static struct kprobe kp_try = { .symbol_name = "dma_iova_try_alloc", .pre_handler = pre_try, .post_handler = post };
static struct kprobe kp_map = { .symbol_name = "dma_map_phys", .pre_handler = pre_map, .post_handler = post };
static struct kprobe *kps[] = { &kp, &kp_try, &kp_map };

static int __init nrlab_fail_init(void)
{
	return register_kprobes(kps, ARRAY_SIZE(kps));
}

static void __exit nrlab_fail_exit(void)
{
	unregister_kprobes(kps, ARRAY_SIZE(kps));
}

module_init(nrlab_fail_init);
module_exit(nrlab_fail_exit);
MODULE_LICENSE("GPL");
