/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * nrlab_importer.h: the ioctl ABI of the kernel lab's dma-buf importer
 * fixture (nrlab_importer.c). One ioctl and one struct per operation, so
 * that no field means different things for different operations; every
 * struct ends its inputs and outputs with the same status.
 *
 * Mirrored by kernel-lab/src/importer/abi.rs (zerocopy); every size and
 * offset is pinned by kernel-lab/tests/importer_header.rs, which compiles
 * this header.
 */
#ifndef NRLAB_IMPORTER_H
#define NRLAB_IMPORTER_H

#include <linux/types.h>
#include <linux/ioctl.h>

/* DMA entries NRLAB_IOCTL_MAP copies out (a scattered 8K framebuffer on
 * dma-direct has one per range; the ioctl size field keeps it below 1022). */
#define NRLAB_MAX_ENTRIES 512
/* Bytes per edu DMA (edu's buffer is 4 KiB; QEMU: keep <= 2 KiB). */
#define NRLAB_MAX_DMA 2048
/* Ranges NRLAB_IOCTL_IOVA links, and the bytes edu reads from each. */
#define NRLAB_MAX_IOVA_RANGES 8
#define NRLAB_IOVA_READ 256

/* After every operation: its errno and the importer's state. */
struct nrlab_status {
	__s32 err;		/* 0 or -errno of the step */
	__u32 invalidations;	/* invalidate_mappings calls so far */
	__u32 mapped;		/* a mapping is kept */
	__u32 unmapped_in_cb;	/* mappings the callback unmapped */
};

/* A DMA entry (address, length), or a range (BAR offset, length). */
struct nrlab_entry {
	__u64 addr;
	__u64 len;
};

/* dma_buf_get(fd) + dma_buf_dynamic_attach(edu, allow_peer2peer). */
struct nrlab_attach {
	__s32 fd;		/* in: the dma-buf */
	__u32 pad;
	struct nrlab_status st;
};

/* dma_buf_map_attachment() under the reservation lock. */
struct nrlab_map {
	__u32 keep;		/* in: keep the mapping (else unmap at once) */
	__u32 nents;		/* out: sgt->nents */
	__u32 orig_nents;	/* out: sgt->orig_nents */
	__u32 total_entries;	/* out: DMA entries (may exceed count) */
	__u32 count;		/* out: entries copied into ent[] */
	__u32 pad;
	struct nrlab_status st;
	struct nrlab_entry ent[NRLAB_MAX_ENTRIES];	/* out */
};

/* edu reads len bytes at DMA address addr. */
struct nrlab_dma {
	__u64 addr;		/* in: DMA address */
	__u32 len;		/* in: bytes, <= NRLAB_MAX_DMA */
	__u32 pad;
	struct nrlab_status st;
	__u8 data[NRLAB_MAX_DMA];	/* out: what edu read */
};

/* Chunks one NRLAB_IOCTL_GATHER reads, and their total bytes (<= MAX_DMA). */
#define NRLAB_GATHER_MAX 16
#define NRLAB_GATHER_BYTES 2048

/* edu reads src[i].len bytes at DMA address src[i].addr, for i < count, into
 * consecutive bytes of data. */
struct nrlab_gather {
	__u32 count;		/* in: 1..NRLAB_GATHER_MAX */
	__u32 pad;
	struct nrlab_status st;
	struct nrlab_entry src[NRLAB_GATHER_MAX];	/* in */
	__u8 data[NRLAB_GATHER_BYTES];	/* out: the chunks, in order */
};

/* pci_p2pdma_distance(provider, edu, verbose). */
struct nrlab_distance {
	__u64 provider;		/* in: domain << 16 | bus << 8 | devfn */
	__s32 distance;		/* out */
	__u32 pad;
	struct nrlab_status st;
};

/*
 * The IOVA path of dma_buf_phys_vec_to_sgt() by hand: dma_iova_try_alloc,
 * one dma_iova_link per range, dma_iova_sync; edu reads NRLAB_IOVA_READ
 * bytes at the start of each range; dma_iova_destroy.
 */
struct nrlab_iova {
	__u64 provider;		/* in: domain << 16 | bus << 8 | devfn */
	__u32 bar;		/* in: the provider's BAR */
	__u32 corrected;	/* in: 0 links every range at IOVA offset 0
				 * (as the kernel does), 1 at the bytes linked */
	__u32 nr_ranges;	/* in: 1..NRLAB_MAX_IOVA_RANGES */
	__u32 failed_range;	/* out: the range whose link failed, else
				 * nr_ranges */
	__u64 iova;		/* out: the IOVA span's start */
	__u64 linked;		/* out: bytes linked */
	struct nrlab_status st;
	struct nrlab_entry ranges[NRLAB_MAX_IOVA_RANGES];	/* in */
	__u8 data[NRLAB_MAX_IOVA_RANGES * NRLAB_IOVA_READ];	/* out */
};

#define NRLAB_IOCTL_ATTACH	_IOWR('N', 0x41, struct nrlab_attach)
#define NRLAB_IOCTL_MAP		_IOWR('N', 0x42, struct nrlab_map)
/* Unmap a kept mapping. */
#define NRLAB_IOCTL_UNMAP	_IOWR('N', 0x43, struct nrlab_status)
/* The status only. */
#define NRLAB_IOCTL_STATUS	_IOWR('N', 0x44, struct nrlab_status)
/* Unmap if kept, dma_buf_detach + dma_buf_put. */
#define NRLAB_IOCTL_DETACH	_IOWR('N', 0x45, struct nrlab_status)
#define NRLAB_IOCTL_DMA		_IOWR('N', 0x46, struct nrlab_dma)
#define NRLAB_IOCTL_DISTANCE	_IOWR('N', 0x47, struct nrlab_distance)
#define NRLAB_IOCTL_IOVA	_IOWR('N', 0x48, struct nrlab_iova)
#define NRLAB_IOCTL_GATHER	_IOWR('N', 0x49, struct nrlab_gather)

#endif /* NRLAB_IMPORTER_H */
