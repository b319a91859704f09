/*
 * layout_probe.c - what the real <linux/vfio.h> and <linux/iommufd.h> say about the UAPI that the
 * nr-ranges-uapi crate models. Built and run by uapi/tests/kernel_header.rs,
 * which compares every line with the same numbers computed from the Rust
 * types.
 *
 * Output: one line per fact, "NAME VALUE", NAME without spaces:
 *   sizeof(S) / alignof(S)              struct S
 *   offsetof(S,f) / sizeof(S.f) / alignof(S.f)
 *                                       field f of struct S; for a flexible
 *                                       array member, sizeof/alignof of its
 *                                       element, as S.f[0]
 *   CONSTANT                            value of a macro or enum constant
 *   sample(NAME)                        lowercase hex bytes of a whole
 *                                       VFIO_DEVICE_FEATURE(DMA_BUF) argument
 *   info.*                              informational, not compared
 * Every number is printed in decimal.
 *
 * The samples come from "layout_samples.h", which the Rust test generates
 * from its own sample list (so the list exists once). It defines
 *     static const struct sample samples[];
 * with the types declared below. Fields with has_X == 0 take the default a
 * careful C user would write (see build_sample()).
 *
 * Build (as the test does): cc -std=c11 -Wall -Wextra -Werror -I INCLUDE
 *     -I INCLUDE/<triplet> -I DIR_OF_layout_samples.h layout_probe.c
 * (__alignof__ of an expression is the one GNU C extension used; GCC and
 * Clang have it in every -std mode.)
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <linux/version.h>
#include <linux/vfio.h>
#include <linux/iommufd.h>

struct sample_range {
	unsigned long long offset;
	unsigned long long length;
};

struct sample {
	const char *name;
	int has_feature_flags;
	unsigned int feature_flags;
	int has_argsz;
	unsigned int argsz;
	unsigned int region_index;
	unsigned int open_flags;
	unsigned int flags;
	int has_nr_ranges;
	unsigned int nr_ranges;
	size_t n_ranges;
	const struct sample_range *ranges;
};

#include "layout_samples.h"

static void put(const char *name, long long value)
{
	printf("%s %lld\n", name, value);
}

/* Every value printed (sizes, offsets, constants, ioctl codes) fits in a
 * long long; printing them all alike keeps the format trivial to parse. */
#define P(name, v) put(name, (long long)(v))

#define STRUCT(S)                                                              \
	do {                                                                   \
		P("sizeof(" #S ")", sizeof(struct S));                         \
		P("alignof(" #S ")", _Alignof(struct S));                      \
	} while (0)

/* __alignof__ of an expression: the field's alignment as declared, including
 * attributes such as __aligned_u64's (C11's _Alignof only takes a type). */
#define FIELD(S, f)                                                            \
	do {                                                                   \
		P("offsetof(" #S "," #f ")", offsetof(struct S, f));           \
		P("sizeof(" #S "." #f ")", sizeof(((struct S *)0)->f));        \
		P("alignof(" #S "." #f ")", __alignof__(((struct S *)0)->f));  \
	} while (0)

/* A flexible array member has no sizeof: report its element's. */
#define FLEX_FIELD(S, f)                                                       \
	do {                                                                   \
		P("offsetof(" #S "," #f ")", offsetof(struct S, f));           \
		P("sizeof(" #S "." #f "[0])", sizeof(((struct S *)0)->f[0]));  \
		P("alignof(" #S "." #f "[0])",                                 \
		  __alignof__(((struct S *)0)->f[0]));                         \
	} while (0)

#define CONST(c) P(#c, c)

_Static_assert(offsetof(struct vfio_device_feature, data) %
			       _Alignof(struct vfio_device_feature_dma_buf) ==
		       0,
	       "struct vfio_device_feature_dma_buf cannot be placed at data[]");

/* The argument as a C user builds it: a struct vfio_device_feature whose
 * data[] holds a struct vfio_device_feature_dma_buf with its ranges, in a
 * buffer from calloc (aligned for any type, zeroed so no byte is
 * indeterminate), every field assigned by name. */
static void build_sample(const struct sample *s)
{
	size_t size = sizeof(struct vfio_device_feature) +
		      sizeof(struct vfio_device_feature_dma_buf) +
		      s->n_ranges * sizeof(struct vfio_region_dma_range);
	struct vfio_device_feature *feature = calloc(1, size);
	if (!feature) {
		perror("calloc");
		exit(1);
	}
	struct vfio_device_feature_dma_buf *dma_buf =
		(struct vfio_device_feature_dma_buf *)(void *)feature->data;

	feature->argsz = s->has_argsz ? s->argsz : (__u32)size;
	feature->flags = s->has_feature_flags ? s->feature_flags :
		VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
	dma_buf->region_index = s->region_index;
	dma_buf->open_flags = s->open_flags;
	dma_buf->flags = s->flags;
	/* nr_ranges first: dma_ranges[] is __counted_by(nr_ranges). */
	dma_buf->nr_ranges = s->n_ranges;
	for (size_t i = 0; i < s->n_ranges; i++) {
		dma_buf->dma_ranges[i].offset = s->ranges[i].offset;
		dma_buf->dma_ranges[i].length = s->ranges[i].length;
	}
	if (s->has_nr_ranges)
		dma_buf->nr_ranges = s->nr_ranges;

	/* The argument ends after the last range written. */
	const unsigned char *bytes = (const unsigned char *)feature;
	size_t len = (size_t)((const unsigned char *)&dma_buf->dma_ranges[s->n_ranges] - bytes);
	printf("sample(%s) ", s->name);
	for (size_t i = 0; i < len; i++)
		printf("%02x", bytes[i]);
	printf("\n");
	free(feature);
}

int main(void)
{
	P("info.LINUX_VERSION_CODE", LINUX_VERSION_CODE);

	STRUCT(vfio_device_feature);
	FIELD(vfio_device_feature, argsz);
	FIELD(vfio_device_feature, flags);
	FLEX_FIELD(vfio_device_feature, data);

	STRUCT(vfio_device_feature_dma_buf);
	FIELD(vfio_device_feature_dma_buf, region_index);
	FIELD(vfio_device_feature_dma_buf, open_flags);
	FIELD(vfio_device_feature_dma_buf, flags);
	FIELD(vfio_device_feature_dma_buf, nr_ranges);
	FLEX_FIELD(vfio_device_feature_dma_buf, dma_ranges);

	STRUCT(vfio_region_dma_range);
	FIELD(vfio_region_dma_range, offset);
	FIELD(vfio_region_dma_range, length);

	STRUCT(vfio_group_status);
	FIELD(vfio_group_status, argsz);
	FIELD(vfio_group_status, flags);

	STRUCT(vfio_device_info);
	FIELD(vfio_device_info, argsz);
	FIELD(vfio_device_info, flags);
	FIELD(vfio_device_info, num_regions);
	FIELD(vfio_device_info, num_irqs);
	FIELD(vfio_device_info, cap_offset);
	FIELD(vfio_device_info, pad);

	STRUCT(vfio_region_info);
	FIELD(vfio_region_info, argsz);
	FIELD(vfio_region_info, flags);
	FIELD(vfio_region_info, index);
	FIELD(vfio_region_info, cap_offset);
	FIELD(vfio_region_info, size);
	FIELD(vfio_region_info, offset);

	STRUCT(vfio_info_cap_header);
	FIELD(vfio_info_cap_header, id);
	FIELD(vfio_info_cap_header, version);
	FIELD(vfio_info_cap_header, next);

	STRUCT(vfio_region_sparse_mmap_area);
	FIELD(vfio_region_sparse_mmap_area, offset);
	FIELD(vfio_region_sparse_mmap_area, size);

	STRUCT(vfio_region_info_cap_sparse_mmap);
	FIELD(vfio_region_info_cap_sparse_mmap, header);
	FIELD(vfio_region_info_cap_sparse_mmap, nr_areas);
	FIELD(vfio_region_info_cap_sparse_mmap, reserved);
	FLEX_FIELD(vfio_region_info_cap_sparse_mmap, areas);

	STRUCT(vfio_device_bind_iommufd);
	FIELD(vfio_device_bind_iommufd, argsz);
	FIELD(vfio_device_bind_iommufd, flags);
	FIELD(vfio_device_bind_iommufd, iommufd);
	FIELD(vfio_device_bind_iommufd, out_devid);
	FIELD(vfio_device_bind_iommufd, token_uuid_ptr);

	STRUCT(vfio_device_attach_iommufd_pt);
	FIELD(vfio_device_attach_iommufd_pt, argsz);
	FIELD(vfio_device_attach_iommufd_pt, flags);
	FIELD(vfio_device_attach_iommufd_pt, pt_id);
	FIELD(vfio_device_attach_iommufd_pt, pasid);

	STRUCT(vfio_device_detach_iommufd_pt);
	FIELD(vfio_device_detach_iommufd_pt, argsz);
	FIELD(vfio_device_detach_iommufd_pt, flags);
	FIELD(vfio_device_detach_iommufd_pt, pasid);

	STRUCT(iommu_destroy);
	FIELD(iommu_destroy, size);
	FIELD(iommu_destroy, id);

	STRUCT(iommu_ioas_alloc);
	FIELD(iommu_ioas_alloc, size);
	FIELD(iommu_ioas_alloc, flags);
	FIELD(iommu_ioas_alloc, out_ioas_id);

	STRUCT(iommu_ioas_map_file);
	FIELD(iommu_ioas_map_file, size);
	FIELD(iommu_ioas_map_file, flags);
	FIELD(iommu_ioas_map_file, ioas_id);
	FIELD(iommu_ioas_map_file, fd);
	FIELD(iommu_ioas_map_file, start);
	FIELD(iommu_ioas_map_file, length);
	FIELD(iommu_ioas_map_file, iova);

	STRUCT(iommu_ioas_unmap);
	FIELD(iommu_ioas_unmap, size);
	FIELD(iommu_ioas_unmap, ioas_id);
	FIELD(iommu_ioas_unmap, iova);
	FIELD(iommu_ioas_unmap, length);

	CONST(VFIO_TYPE);
	CONST(VFIO_BASE);
	CONST(VFIO_API_VERSION);
	CONST(VFIO_TYPE1v2_IOMMU);
	CONST(VFIO_GROUP_FLAGS_VIABLE);
	CONST(VFIO_DEVICE_FLAGS_RESET);
	CONST(VFIO_REGION_INFO_FLAG_MMAP);
	CONST(VFIO_PCI_ROM_REGION_INDEX);
	CONST(VFIO_PCI_CONFIG_REGION_INDEX);
	CONST(VFIO_DEVICE_FEATURE_MASK);
	CONST(VFIO_DEVICE_FEATURE_GET);
	CONST(VFIO_DEVICE_FEATURE_SET);
	CONST(VFIO_DEVICE_FEATURE_PROBE);
	CONST(VFIO_DEVICE_FEATURE_DMA_BUF);
	CONST(VFIO_REGION_INFO_FLAG_CAPS);
	CONST(VFIO_REGION_INFO_CAP_SPARSE_MMAP);
	CONST(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
	CONST(VFIO_DEVICE_BIND_FLAG_TOKEN);
	CONST(IOMMUFD_TYPE);
	CONST(IOMMUFD_CMD_DESTROY);
	CONST(IOMMUFD_CMD_IOAS_ALLOC);
	CONST(IOMMUFD_CMD_IOAS_UNMAP);
	CONST(IOMMUFD_CMD_IOAS_MAP_FILE);
	CONST(IOMMU_IOAS_MAP_FIXED_IOVA);
	CONST(IOMMU_IOAS_MAP_WRITEABLE);
	CONST(IOMMU_IOAS_MAP_READABLE);

	CONST(VFIO_GET_API_VERSION);
	CONST(VFIO_CHECK_EXTENSION);
	CONST(VFIO_SET_IOMMU);
	CONST(VFIO_GROUP_GET_STATUS);
	CONST(VFIO_GROUP_SET_CONTAINER);
	CONST(VFIO_GROUP_GET_DEVICE_FD);
	CONST(VFIO_DEVICE_GET_INFO);
	CONST(VFIO_DEVICE_GET_REGION_INFO);
	CONST(VFIO_DEVICE_RESET);
	CONST(VFIO_DEVICE_FEATURE);
	CONST(VFIO_DEVICE_BIND_IOMMUFD);
	CONST(VFIO_DEVICE_ATTACH_IOMMUFD_PT);
	CONST(VFIO_DEVICE_DETACH_IOMMUFD_PT);
	CONST(IOMMU_DESTROY);
	CONST(IOMMU_IOAS_ALLOC);
	CONST(IOMMU_IOAS_UNMAP);
	CONST(IOMMU_IOAS_MAP_FILE);

	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++)
		build_sample(&samples[i]);

	if (fflush(stdout) != 0 || ferror(stdout)) {
		perror("stdout");
		return 1;
	}
	return 0;
}
