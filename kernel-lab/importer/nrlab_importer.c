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
 *   GATHER   edu DMA of up to NRLAB_GATHER_MAX chunks (address, length) into
 *            consecutive bytes of edu's buffer, one canary and one copy back
 *            for all of them (edu runs each DMA from a 100 ms timer, so a
 *            framebuffer's samples are read in batches)
 *   IOVA     the IOVA path of dma_buf_phys_vec_to_sgt() by hand, for
 *            `nr_ranges` (<= 8) ranges (BAR offset, length) of BAR `bar` of
 *            the provider: dma_iova_try_alloc, one dma_iova_link per range
 *            at IOVA offset 0 (as the kernel does) or, `corrected`, at the
 *            bytes linked so far, dma_iova_sync; edu reads 256 bytes at the
 *            start of each range into data[256 * i]; dma_iova_destroy
 *
 * Every answer is the kernel's: errors are returned in `st.err` (0 or -errno).
 * The invalidation callback unmaps (otherwise a revocation would wait).
 *
 * Each open file of /dev/nrlab_importer holds one attachment, so that an
 * importer holding N dma-bufs (the single-range workaround) is N open files.
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
static_assert(sizeof(struct nrlab_gather) == 24 + 16 * NRLAB_GATHER_MAX + NRLAB_GATHER_BYTES);
static_assert(NRLAB_GATHER_BYTES <= NRLAB_MAX_DMA);
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
static atomic_t invalidations = ATOMIC_INIT(0);
static atomic_t unmapped_in_cb = ATOMIC_INIT(0);

/*
 * An open file's attachment; `sgt` is only touched under the dma-buf's
 * resv lock.
 */
struct nrlab_file {
	struct dma_buf *dbuf;
	struct dma_buf_attachment *att;
	struct sg_table *sgt;
};

/* Called by the exporter with the resv lock held: unmap at once. */
static void nrlab_invalidate(struct dma_buf_attachment *a)
{
	struct nrlab_file *nf = a->importer_priv;

	atomic_inc(&invalidations);
	if (nf->sgt) {
		dma_buf_unmap_attachment(a, nf->sgt, DMA_BIDIRECTIONAL);
		nf->sgt = NULL;
		atomic_inc(&unmapped_in_cb);
	}
}

static const struct dma_buf_attach_ops nrlab_ops = {
	.allow_peer2peer = true,
	.invalidate_mappings = nrlab_invalidate,
};

static void unmap_locked(struct nrlab_file *nf)
{
	if (nf->sgt) {
		dma_buf_unmap_attachment(nf->att, nf->sgt, DMA_BIDIRECTIONAL);
		nf->sgt = NULL;
	}
}

static int do_map(struct nrlab_file *nf, struct nrlab_map *io)
{
	struct sg_table *t;
	struct scatterlist *sg;
	unsigned int i;
	int ret;

	if (!nf->att)
		return -ENOENT;
	ret = dma_resv_lock(nf->dbuf->resv, NULL);
	if (ret)
		return ret;
	unmap_locked(nf);
	t = dma_buf_map_attachment(nf->att, DMA_BIDIRECTIONAL);
	if (IS_ERR(t)) {
		dma_resv_unlock(nf->dbuf->resv);
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
		nf->sgt = t;
	else
		dma_buf_unmap_attachment(nf->att, t, DMA_BIDIRECTIONAL);
	dma_resv_unlock(nf->dbuf->resv);
	return 0;
}

static void do_detach(struct nrlab_file *nf)
{
	if (!nf->att)
		return;
	dma_resv_lock(nf->dbuf->resv, NULL);
	unmap_locked(nf);
	dma_resv_unlock(nf->dbuf->resv);
	dma_buf_detach(nf->dbuf, nf->att);
	dma_buf_put(nf->dbuf);
	nf->att = NULL;
	nf->dbuf = NULL;
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

/*
 * Each chunk lands at the next free byte of edu's buffer; one canary before
 * and one copy back after, instead of per chunk.
 */
static int do_gather(struct nrlab_gather *io)
{
	u32 i, at = 0;
	int ret;

	if (io->count == 0 || io->count > NRLAB_GATHER_MAX)
		return -EINVAL;
	for (i = 0; i < io->count; i++) {
		if (io->src[i].len == 0 || io->src[i].len > NRLAB_GATHER_BYTES - at)
			return -EINVAL;
		at += io->src[i].len;
	}
	memset(bounce, 0xee, at);
	ret = edu_dma(bounce_dma, EDU_BUF, at, 0);
	for (i = 0, at = 0; !ret && i < io->count; at += io->src[i].len, i++)
		ret = edu_dma(io->src[i].addr, EDU_BUF + at, io->src[i].len, 0);
	if (!ret) {
		memset(bounce, 0, at);
		ret = edu_dma(EDU_BUF, bounce_dma, at, EDU_DMA_TO_RAM);
	}
	if (!ret)
		memcpy(io->data, bounce, at);
	return ret;
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

static int do_attach(struct nrlab_file *nf, struct nrlab_attach *io)
{
	struct dma_buf *b;
	struct dma_buf_attachment *a;

	if (nf->att)
		return -EBUSY;
	b = dma_buf_get(io->fd);
	if (IS_ERR(b))
		return PTR_ERR(b);
	a = dma_buf_dynamic_attach(b, &edu->dev, &nrlab_ops, nf);
	if (IS_ERR(a)) {
		dma_buf_put(b);
		return PTR_ERR(a);
	}
	nf->dbuf = b;
	nf->att = a;
	return 0;
}

static int do_unmap(struct nrlab_file *nf)
{
	if (nf->att) {
		dma_resv_lock(nf->dbuf->resv, NULL);
		unmap_locked(nf);
		dma_resv_unlock(nf->dbuf->resv);
	}
	return 0;
}

static int do_status(void)
{
	return 0;
}

static int do_detach_op(struct nrlab_file *nf)
{
	do_detach(nf);
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
			st->mapped = nf->sgt != NULL;				\
			mutex_unlock(&lock);					\
			r = copy_to_user((void __user *)(arg), io, sizeof(*io)) ? -EFAULT : 0; \
		}								\
		kvfree(io);							\
		r;								\
	})

static long nrlab_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct nrlab_file *nf = f->private_data;

	switch (cmd) {
	case NRLAB_IOCTL_ATTACH:
		return NRLAB_CALL(struct nrlab_attach, arg, &io->st, do_attach(nf, io));
	case NRLAB_IOCTL_MAP:
		return NRLAB_CALL(struct nrlab_map, arg, &io->st, do_map(nf, io));
	case NRLAB_IOCTL_UNMAP:
		return NRLAB_CALL(struct nrlab_status, arg, io, do_unmap(nf));
	case NRLAB_IOCTL_STATUS:
		return NRLAB_CALL(struct nrlab_status, arg, io, do_status());
	case NRLAB_IOCTL_DETACH:
		return NRLAB_CALL(struct nrlab_status, arg, io, do_detach_op(nf));
	case NRLAB_IOCTL_DMA:
		return NRLAB_CALL(struct nrlab_dma, arg, &io->st, do_dma(io));
	case NRLAB_IOCTL_GATHER:
		return NRLAB_CALL(struct nrlab_gather, arg, &io->st, do_gather(io));
	case NRLAB_IOCTL_DISTANCE:
		return NRLAB_CALL(struct nrlab_distance, arg, &io->st, do_distance(io));
	case NRLAB_IOCTL_IOVA:
		return NRLAB_CALL(struct nrlab_iova, arg, &io->st, do_iova(io));
	default:
		return -ENOTTY;
	}
}

static int nrlab_open(struct inode *inode, struct file *f)
{
	struct nrlab_file *nf = kzalloc(sizeof(*nf), GFP_KERNEL);

	if (!nf)
		return -ENOMEM;
	f->private_data = nf;
	return 0;
}

/* Closing the file lets go of its dma-buf, as an importer's teardown. */
static int nrlab_release(struct inode *inode, struct file *f)
{
	struct nrlab_file *nf = f->private_data;

	mutex_lock(&lock);
	do_detach(nf);
	mutex_unlock(&lock);
	kfree(nf);
	return 0;
}

static const struct file_operations nrlab_fops = {
	.owner = THIS_MODULE,
	.open = nrlab_open,
	.release = nrlab_release,
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

/*
 * An open file holds a module reference (fops.owner), so the driver only
 * goes away once every attachment is gone.
 */
static void nrlab_remove(struct pci_dev *pdev)
{
	misc_deregister(&nrlab_misc);
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
