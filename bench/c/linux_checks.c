// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The checks Linux 7.2 applies to VFIO_DEVICE_FEATURE(DMA_BUF), written in C
 * the way the kernel structures them, as a baseline for the Rust validator.
 *
 * This is an independent implementation, not kernel code. It follows the
 * same sequence as vfio_ioctl_device_feature(), vfio_check_feature(),
 * vfio_pci_core_feature_dma_buf(), memdup_array_user(),
 * validate_dmabuf_input() and vfio_pci_core_fill_phys_vec(): the same
 * checks, the same order, the same errno numbers, and the kernel's shape of
 * two loops over the ranges (first validate every range and sum the
 * lengths, then turn every range into a physical vector and bound-check it).
 *
 * What is not modelled: the copy of the range array into a kmalloc'ed
 * buffer (the ranges are read in place from the caller's bytes, as the Rust
 * validator reads them), and the allocations themselves (the phys_vec array
 * is provided by the caller).
 *
 * Memory model: `arg` points to the whole ioctl argument, the 8-byte
 * `struct vfio_device_feature` header followed by `readable` bytes of data;
 * reading data beyond `readable` bytes is a fault (EFAULT), exactly as the
 * Rust `uapi::Request::readable` describes. Nothing beyond `8 + readable`
 * bytes of `arg` is ever read. `arg` need not be aligned.
 *
 * Return values: 0 and the dma-buf size in *size_out when a dma-buf would be
 * exported; LC_PROBE for a successful PROBE; LC_OTHER_FEATURE when the
 * feature index is not DMA_BUF (dispatched elsewhere, outside the model);
 * otherwise a negative errno.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * The errno numbers come from the workspace's one errno table
 * (validator::Errno): build.rs defines LC_ENOMEM, LC_EFAULT, LC_ENODEV,
 * LC_EINVAL and LC_EOVERFLOW on the compiler's command line.
 */
#if !defined(LC_ENOMEM) || !defined(LC_EFAULT) || !defined(LC_ENODEV) || !defined(LC_EINVAL) || \
	!defined(LC_EOVERFLOW)
#error "build.rs defines the errno numbers (LC_E*) from validator::Errno"
#endif

#define LC_PROBE 1
#define LC_OTHER_FEATURE 2

/* include/uapi/linux/vfio.h */
#define VFIO_DEVICE_FEATURE_MASK 0xffffu
#define VFIO_DEVICE_FEATURE_GET (1u << 16)
#define VFIO_DEVICE_FEATURE_SET (1u << 17)
#define VFIO_DEVICE_FEATURE_PROBE (1u << 18)
#define VFIO_DEVICE_FEATURE_DMA_BUF 11u
#define VFIO_PCI_ROM_REGION_INDEX 6u

/* bit 63 of a dma-iova length is a flag (DMA_IOVA_USE_SWIOTLB) */
#define LC_LENGTH_LIMIT (1ull << 63)

struct vfio_device_feature_hdr {
	uint32_t argsz;
	uint32_t flags;
};

struct vfio_device_feature_dma_buf_hdr {
	uint32_t region_index;
	uint32_t open_flags;
	uint32_t flags;
	uint32_t nr_ranges;
};

struct vfio_region_dma_range {
	uint64_t offset;
	uint64_t length;
};

/* What the checks need of the device. Mirrored by bench/src/c_baseline.rs. */
enum lc_bar_kind { LC_BAR_ABSENT = 0, LC_BAR_IO = 1, LC_BAR_MMIO = 2 };

struct lc_bar {
	uint32_t kind;
	uint32_t pad;
	uint64_t start; /* pci_resource_start() */
	uint64_t len;   /* pci_resource_len() */
};

struct lc_device {
	uint64_t page_size;   /* PAGE_SIZE, a power of two */
	uint64_t kmalloc_max; /* KMALLOC_MAX_SIZE */
	struct lc_bar bars[6];
};

/* struct dma_buf_phys_vec */
struct lc_phys_vec {
	uint64_t paddr;
	uint64_t len;
};

/* Range i of the array that starts right after the dma-buf header. */
static inline struct vfio_region_dma_range range_at(const uint8_t *ranges, uint32_t i)
{
	struct vfio_region_dma_range r;

	memcpy(&r, ranges + (size_t)i * sizeof(r), sizeof(r));
	return r;
}

/* vfio_check_feature(): 1 to go on, 0 for a PROBE, or -errno. */
static inline int check_feature(uint32_t flags, uint64_t argsz, uint32_t supported_ops, uint64_t minsz)
{
	if ((flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)) & ~supported_ops)
		return -LC_EINVAL;
	if (flags & VFIO_DEVICE_FEATURE_PROBE)
		return 0;
	if (!(flags & (VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET)))
		return -LC_EINVAL;
	if (argsz < minsz)
		return -LC_EINVAL;
	return 1;
}

/* First loop: every range non-empty and page aligned, total without overflow. */
static inline int validate_input(const uint8_t *ranges, uint32_t nr_ranges, uint64_t page_size, uint64_t *length)
{
	uint64_t total = 0;
	uint32_t i;

	for (i = 0; i < nr_ranges; i++) {
		struct vfio_region_dma_range r = range_at(ranges, i);

		if (!r.length || (r.offset & (page_size - 1)) || (r.length & (page_size - 1)))
			return -LC_EINVAL;
		if (__builtin_add_overflow(total, r.length, &total))
			return -LC_EINVAL;
	}
	if (total >= LC_LENGTH_LIMIT)
		return -LC_EINVAL;
	*length = total;
	return 0;
}

/*
 * Second loop: physical address of every range, bound-checked against the
 * BAR. With phys == NULL (constant-folded away after inlining) the vectors
 * are computed and checked but not stored.
 */
static inline __attribute__((always_inline)) int fill_phys_vec(struct lc_phys_vec *phys, const uint8_t *ranges,
							     uint32_t nr_ranges, uint64_t start, uint64_t len)
{
	/* The kernel computes the end of the BAR without an overflow check. */
	uint64_t max_addr = start + len;
	uint32_t i;

	for (i = 0; i < nr_ranges; i++) {
		struct vfio_region_dma_range r = range_at(ranges, i);
		uint64_t paddr, end;

		if (__builtin_add_overflow(start, r.offset, &paddr) || __builtin_add_overflow(paddr, r.length, &end))
			return -LC_EOVERFLOW;
		if (end > max_addr)
			return -LC_EINVAL;
		if (phys) {
			phys[i].paddr = paddr;
			phys[i].len = r.length;
		}
	}
	return 0;
}

static inline __attribute__((always_inline)) int dma_buf_feature(const uint8_t *arg, uint64_t readable,
								 const struct lc_device *dev, struct lc_phys_vec *phys,
								 uint64_t phys_cap, uint64_t *size_out)
{
	struct vfio_device_feature_hdr feature;
	struct vfio_device_feature_dma_buf_hdr hdr;
	const struct lc_bar *bar;
	const uint8_t *ranges;
	uint64_t array_bytes, length = 0;
	int ret;

	/* vfio_ioctl_device_feature(): the header itself is always readable here. */
	memcpy(&feature, arg, sizeof(feature));
	if (feature.argsz < sizeof(feature))
		return -LC_EINVAL;
	if (feature.flags & ~(VFIO_DEVICE_FEATURE_MASK | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET |
			      VFIO_DEVICE_FEATURE_PROBE))
		return -LC_EINVAL;
	if (!(feature.flags & VFIO_DEVICE_FEATURE_PROBE) && (feature.flags & VFIO_DEVICE_FEATURE_GET) &&
	    (feature.flags & VFIO_DEVICE_FEATURE_SET))
		return -LC_EINVAL;
	if ((feature.flags & VFIO_DEVICE_FEATURE_MASK) != VFIO_DEVICE_FEATURE_DMA_BUF)
		return LC_OTHER_FEATURE;

	/* vfio_pci_core_feature_dma_buf() */
	ret = check_feature(feature.flags, (uint64_t)feature.argsz - sizeof(feature), VFIO_DEVICE_FEATURE_GET,
			    sizeof(hdr));
	if (ret != 1)
		return ret == 0 ? LC_PROBE : ret;

	if (readable < sizeof(hdr)) /* copy_from_user() of the header */
		return -LC_EFAULT;
	memcpy(&hdr, arg + sizeof(feature), sizeof(hdr));
	if (!hdr.nr_ranges || hdr.flags)
		return -LC_EINVAL;
	if (hdr.region_index >= VFIO_PCI_ROM_REGION_INDEX)
		return -LC_ENODEV;
	bar = &dev->bars[hdr.region_index];
	if (bar->kind == LC_BAR_ABSENT || !bar->len) /* measured on 7.2.13 */
		return -LC_ENODEV;

	/* memdup_array_user(): kmalloc limit, then the copy (read in place here). */
	array_bytes = (uint64_t)hdr.nr_ranges * sizeof(struct vfio_region_dma_range);
	if (array_bytes > dev->kmalloc_max)
		return -LC_ENOMEM;
	if (readable - sizeof(hdr) < array_bytes)
		return -LC_EFAULT;
	ranges = arg + sizeof(feature) + sizeof(hdr);

	ret = validate_input(ranges, hdr.nr_ranges, dev->page_size, &length);
	if (ret)
		return ret;

	/* kcalloc() of priv->phys_vec: the caller's array must hold every range. */
	if (phys && phys_cap < hdr.nr_ranges)
		return -LC_ENOMEM;

	/* vfio_pci_core_get_dmabuf_phys(): no P2P provider for a non-memory BAR. */
	if (bar->kind != LC_BAR_MMIO)
		return -LC_EINVAL;
	ret = fill_phys_vec(phys, ranges, hdr.nr_ranges, bar->start, bar->len);
	if (ret)
		return ret;

	*size_out = length;
	return 0;
}

/* All the checks; the phys vectors are computed and checked, not stored. */
int lc_dma_buf_check(const uint8_t *arg, uint64_t readable, const struct lc_device *dev, uint64_t *size_out)
{
	return dma_buf_feature(arg, readable, dev, NULL, 0, size_out);
}

/* All the checks, storing the phys vectors in phys[0..nr_ranges]. */
int lc_dma_buf_fill(const uint8_t *arg, uint64_t readable, const struct lc_device *dev, struct lc_phys_vec *phys,
		    uint64_t phys_cap, uint64_t *size_out)
{
	return dma_buf_feature(arg, readable, dev, phys, phys_cap, size_out);
}
