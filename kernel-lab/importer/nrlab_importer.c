// SPDX-License-Identifier: GPL-2.0
/*
 * nrlab_importer: the kernel lab's dma-buf importer fixture.
 *
 * A thin, policy-free test fixture. It binds QEMU's edu device (1234:11e8)
 * so that the importer has a real struct pci_dev, and exposes
 * /dev/nrlab_importer with one ioctl per step (nrlab_importer.h, one struct
 * each):
 *
 *   ATTACH   dma_buf_get(fd) + dma_buf_dynamic_attach(edu, allow_peer2peer,
 *            invalidate_mappings)
 *   MAP      dma_resv_lock + dma_buf_map_attachment; copy out nents,
 *            orig_nents and every DMA (address, length); unmap at once
 *            unless `keep`
 *   UNMAP    unmap a kept mapping
 *   STATUS   invalidation count, whether a mapping is kept
 *   DETACH   unmap if kept, dma_buf_detach + dma_buf_put
 *   DMA      edu DMA: fill edu's buffer with a canary, copy `len` bytes from
 *            DMA address `addr` into it, copy it back to a coherent buffer,
 *            return the bytes
 *   DISTANCE pci_p2pdma_distance(provider, client = edu, verbose): prints
 *            the kernel's p2pdma lines in dmesg
 *   IOVA     the IOVA path of dma_buf_phys_vec_to_sgt() by hand, for
 *            `nr_ranges` (<= 8) ranges (BAR offset, length) of BAR `bar` of
 *            the provider: dma_iova_try_alloc, one dma_iova_link per range
 *            at IOVA offset 0 (as the kernel does) or, `corrected`, at the
 *            bytes linked so far, dma_iova_sync; edu reads 256 bytes at the
 *            start of each range into data[256 * i]; dma_iova_destroy
 *
 * Every answer is the kernel's: errors are returned in `st.err` (0 or -errno).
 * The invalidation callback unmaps (otherwise a revocation would wait).
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/pci-p2pdma.h>
#include <linux/miscdevice.h>
#include <linux/dma-buf.h>
#include <linux/dma-resv.h>
#include <linux/dma-mapping.h>
#include <linux/delay.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>

#include "nrlab_importer.h"

static_assert(sizeof(struct nrlab_map) == 40 + 16 * NRLAB_MAX_ENTRIES);
static_assert(sizeof(struct nrlab_iova) == 56 + 16 * NRLAB_MAX_IOVA_RANGES + NRLAB_MAX_IOVA_RANGES * NRLAB_IOVA_READ);

/* edu (QEMU hw/misc/edu.c): DMA registers and its 4 KiB buffer. */
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_RUN 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_BUF 0x40000

static struct pci_dev *edu;
static void __iomem *edu_mmio;
static void *bounce;		/* coherent buffer edu writes back into */
static dma_addr_t bounce_dma;
static DEFINE_MUTEX(lock);	/* one ioctl at a time */

/* The one attachment; `sgt` is only touched under the dma-buf's resv lock. */
static struct dma_buf *dbuf;
static struct dma_buf_attachment *att;
static struct sg_table *sgt;
static atomic_t invalidations = ATOMIC_INIT(0);
static atomic_t unmapped_in_cb = ATOMIC_INIT(0);

/* Called by the exporter with the resv lock held: unmap at once. */
static void nrlab_invalidate(struct dma_buf_attachment *a)
{
	atomic_inc(&invalidations);
	if (sgt) {
		dma_buf_unmap_attachment(a, sgt, DMA_BIDIRECTIONAL);
		sgt = NULL;
		atomic_inc(&unmapped_in_cb);
	}
}

static const struct dma_buf_attach_ops nrlab_ops = {
	.allow_peer2peer = true,
	.invalidate_mappings = nrlab_invalidate,
};

static void unmap_locked(void)
{
	if (sgt) {
		dma_buf_unmap_attachment(att, sgt, DMA_BIDIRECTIONAL);
		sgt = NULL;
	}
}

static int do_map(struct nrlab_map *io)
{
	struct sg_table *t;
	struct scatterlist *sg;
	unsigned int i;
	int ret;

	if (!att)
		return -ENOENT;
	ret = dma_resv_lock(dbuf->resv, NULL);
	if (ret)
		return ret;
	unmap_locked();
	t = dma_buf_map_attachment(att, DMA_BIDIRECTIONAL);
	if (IS_ERR(t)) {
		dma_resv_unlock(dbuf->resv);
		return PTR_ERR(t);
	}
	io->nents = t->nents;
	io->orig_nents = t->orig_nents;
	io->total_entries = 0;
	/* Walk the DMA side, as an importer programs its engine. */
	for_each_sgtable_dma_sg(t, sg, i) {
		if (i < NRLAB_MAX_ENTRIES) {
			io->ent[i].addr = sg_dma_address(sg);
			io->ent[i].len = sg_dma_len(sg);
			io->count = i + 1;
		}
		io->total_entries++;
	}
	if (io->keep)
		sgt = t;
	else
		dma_buf_unmap_attachment(att, t, DMA_BIDIRECTIONAL);
	dma_resv_unlock(dbuf->resv);
	return 0;
}

static void do_detach(void)
{
	if (!att)
		return;
	dma_resv_lock(dbuf->resv, NULL);
	unmap_locked();
	dma_resv_unlock(dbuf->resv);
	dma_buf_detach(dbuf, att);
	dma_buf_put(dbuf);
	att = NULL;
	dbuf = NULL;
}

/* One edu DMA; edu runs it from a 100 ms timer. */
static int edu_dma(u64 src, u64 dst, u32 cnt, u32 cmd)
{
	int i;

	writeq(src, edu_mmio + EDU_DMA_SRC);
	writeq(dst, edu_mmio + EDU_DMA_DST);
	writeq(cnt, edu_mmio + EDU_DMA_CNT);
	writeq(cmd | EDU_DMA_RUN, edu_mmio + EDU_DMA_CMD);
	for (i = 0; i < 3000; i++) {
		if (!(readq(edu_mmio + EDU_DMA_CMD) & EDU_DMA_RUN))
			return 0;
		usleep_range(1000, 2000);
	}
	return -ETIMEDOUT;
}

/* edu reads `len` bytes at DMA address `addr` into `out`. */
static int edu_read(u64 addr, u32 len, u8 *out)
{
	int ret;

	if (len == 0 || len > NRLAB_MAX_DMA)
		return -EINVAL;
	/* Canary into edu's buffer, so that a DMA that reads nothing shows. */
	memset(bounce, 0xee, len);
	ret = edu_dma(bounce_dma, EDU_BUF, len, 0);
	if (!ret)
		ret = edu_dma(addr, EDU_BUF, len, 0);
	if (!ret) {
		memset(bounce, 0, len);
		ret = edu_dma(EDU_BUF, bounce_dma, len, EDU_DMA_TO_RAM);
	}
	if (!ret)
		memcpy(out, bounce, len);
	return ret;
}

static int do_dma(struct nrlab_dma *io)
{
	return edu_read(io->addr, io->len, io->data);
}

static struct pci_dev *provider_dev(u64 id)
{
	return pci_get_domain_bus_and_slot(id >> 16, (id >> 8) & 0xff, id & 0xff);
}

static int do_iova(struct nrlab_iova *io)
{
	struct dma_iova_state state = {};
	struct device *dev = &edu->dev;
	struct pci_dev *p;
	phys_addr_t base;
	u64 total = 0, mapped = 0, off = 0;
	u32 i, n = io->nr_ranges;
	int ret = 0;

	if (n == 0 || n > NRLAB_MAX_IOVA_RANGES || io->bar > 5)
		return -EINVAL;
	p = provider_dev(io->provider);
	if (!p)
		return -ENODEV;
	base = pci_resource_start(p, io->bar);
	pci_dev_put(p);
	for (i = 0; i < n; i++)
		total += io->ranges[i].len;
	if (!dma_iova_try_alloc(dev, &state, base + io->ranges[0].addr, total))
		return -EOPNOTSUPP;
	io->failed_range = n;
	for (i = 0; i < n; i++) {
		ret = dma_iova_link(dev, &state, base + io->ranges[i].addr, io->corrected ? mapped : 0,
				    io->ranges[i].len, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO);
		if (ret) {
			io->failed_range = i;
			break;
		}
		mapped += io->ranges[i].len;
	}
	if (!ret)
		ret = dma_iova_sync(dev, &state, 0, mapped);
	io->iova = state.addr;
	io->linked = mapped;
	for (i = 0; !ret && i < n; off += io->ranges[i].len, i++)
		ret = edu_read(state.addr + off, min_t(u64, NRLAB_IOVA_READ, io->ranges[i].len),
			       io->data + NRLAB_IOVA_READ * i);
	dma_iova_destroy(dev, &state, mapped, DMA_BIDIRECTIONAL, DMA_ATTR_MMIO);
	return ret;
}

static int do_distance(struct nrlab_distance *io)
{
	struct pci_dev *p;
	struct device *client = &edu->dev;

	p = provider_dev(io->provider);
	if (!p)
		return -ENODEV;
	io->distance = pci_p2pdma_distance_many(p, &client, 1, true);
	pci_dev_put(p);
	return 0;
}

static int do_attach(struct nrlab_attach *io)
{
	if (att)
		return -EBUSY;
	dbuf = dma_buf_get(io->fd);
	if (IS_ERR(dbuf)) {
		int ret = PTR_ERR(dbuf);

		dbuf = NULL;
		return ret;
	}
	att = dma_buf_dynamic_attach(dbuf, &edu->dev, &nrlab_ops, NULL);
	if (IS_ERR(att)) {
		int ret = PTR_ERR(att);

		att = NULL;
		dma_buf_put(dbuf);
		dbuf = NULL;
		return ret;
	}
	return 0;
}

static int do_unmap(void)
{
	if (att) {
		dma_resv_lock(dbuf->resv, NULL);
		unmap_locked();
		dma_resv_unlock(dbuf->resv);
	}
	return 0;
}

static int do_status(void)
{
	return 0;
}

static int do_detach_op(void)
{
	do_detach();
	return 0;
}

/*
 * One ioctl: copy the operation's struct in, run the step under the lock,
 * fill in the status, copy it out. The step's errno travels in st.err; the
 * ioctl itself succeeds.
 */
#define NRLAB_CALL(type, arg, status, step)					\
	({									\
		type *io = kvzalloc(sizeof(*io), GFP_KERNEL);			\
		long r = 0;							\
		if (!io)							\
			r = -ENOMEM;						\
		else if (copy_from_user(io, (void __user *)(arg), sizeof(*io)))	\
			r = -EFAULT;						\
		if (!r) {							\
			struct nrlab_status *st = (status);			\
			mutex_lock(&lock);					\
			st->err = (step);					\
			st->invalidations = atomic_read(&invalidations);	\
			st->unmapped_in_cb = atomic_read(&unmapped_in_cb);	\
			st->mapped = sgt != NULL;				\
			mutex_unlock(&lock);					\
			r = copy_to_user((void __user *)(arg), io, sizeof(*io)) ? -EFAULT : 0; \
		}								\
		kvfree(io);							\
		r;								\
	})

static long nrlab_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case NRLAB_IOCTL_ATTACH:
		return NRLAB_CALL(struct nrlab_attach, arg, &io->st, do_attach(io));
	case NRLAB_IOCTL_MAP:
		return NRLAB_CALL(struct nrlab_map, arg, &io->st, do_map(io));
	case NRLAB_IOCTL_UNMAP:
		return NRLAB_CALL(struct nrlab_status, arg, io, do_unmap());
	case NRLAB_IOCTL_STATUS:
		return NRLAB_CALL(struct nrlab_status, arg, io, do_status());
	case NRLAB_IOCTL_DETACH:
		return NRLAB_CALL(struct nrlab_status, arg, io, do_detach_op());
	case NRLAB_IOCTL_DMA:
		return NRLAB_CALL(struct nrlab_dma, arg, &io->st, do_dma(io));
	case NRLAB_IOCTL_DISTANCE:
		return NRLAB_CALL(struct nrlab_distance, arg, &io->st, do_distance(io));
	case NRLAB_IOCTL_IOVA:
		return NRLAB_CALL(struct nrlab_iova, arg, &io->st, do_iova(io));
	default:
		return -ENOTTY;
	}
}

static const struct file_operations nrlab_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = nrlab_ioctl,
};

static struct miscdevice nrlab_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "nrlab_importer",
	.fops = &nrlab_fops,
};

static int nrlab_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	int ret;

	if (edu)
		return -EBUSY;
	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	pci_set_master(pdev);
	/* QEMU: -device edu,dma_mask=... must allow as much (default 28 bits). */
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		return ret;
	edu_mmio = pcim_iomap(pdev, 0, 0);
	if (!edu_mmio)
		return -ENOMEM;
	bounce = dmam_alloc_coherent(&pdev->dev, NRLAB_MAX_DMA, &bounce_dma, GFP_KERNEL);
	if (!bounce)
		return -ENOMEM;
	edu = pdev;
	ret = misc_register(&nrlab_misc);
	if (ret)
		edu = NULL;
	return ret;
}

static void nrlab_remove(struct pci_dev *pdev)
{
	misc_deregister(&nrlab_misc);
	mutex_lock(&lock);
	do_detach();
	mutex_unlock(&lock);
	edu = NULL;
}

static const struct pci_device_id nrlab_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ }
};
MODULE_DEVICE_TABLE(pci, nrlab_ids);

static struct pci_driver nrlab_driver = {
	.name = "nrlab_importer",
	.id_table = nrlab_ids,
	.probe = nrlab_probe,
	.remove = nrlab_remove,
};
module_pci_driver(nrlab_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("nr-ranges kernel lab: dma-buf importer test fixture (edu)");
MODULE_IMPORT_NS("DMA_BUF");
