//! The framebuffer and the ranges its blocks become.

use uapi::DmaRange;

use crate::buddy::{Block, Buddy};

/// A linear framebuffer: `height` lines of `pitch` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Framebuffer {
    /// Its name (`4K`).
    pub name: &'static str,
    /// Pixels per line.
    pub width: u64,
    /// Lines.
    pub height: u64,
    /// Bits per pixel.
    pub bpp: u64,
    /// Pitch alignment in bytes: display engines fetch lines at aligned
    /// addresses (256 bytes is common; configurable).
    pub pitch_align: u64,
}

/// The resolutions of the experiment, at 32 bpp, pitch aligned to 256 bytes.
pub const RESOLUTIONS: [Framebuffer; 4] = [
    Framebuffer { name: "1080p", width: 1920, height: 1080, bpp: 32, pitch_align: 256 },
    Framebuffer { name: "1440p", width: 2560, height: 1440, bpp: 32, pitch_align: 256 },
    Framebuffer { name: "4K", width: 3840, height: 2160, bpp: 32, pitch_align: 256 },
    Framebuffer { name: "8K", width: 7680, height: 4320, bpp: 32, pitch_align: 256 },
];

impl Framebuffer {
    /// Bytes per line, rounded up to the pitch alignment.
    pub const fn pitch(&self) -> u64 {
        (self.width * self.bpp / 8).div_ceil(self.pitch_align) * self.pitch_align
    }

    /// Bytes: `pitch * height`.
    pub const fn size(&self) -> u64 {
        self.pitch() * self.height
    }
}

/// Turns an allocation's blocks, in the buffer's linear order, into dma-buf
/// ranges, merging a block into the previous range when it starts where
/// that range ends (physically adjacent *and* consecutive in the buffer:
/// sorting would reorder the buffer's bytes).
pub fn merge_ranges(buddy: &Buddy, blocks: &[Block]) -> Vec<DmaRange> {
    let mut out: Vec<DmaRange> = Vec::new();
    for b in blocks {
        let len = buddy.block_bytes(b.order);
        match out.last_mut() {
            Some(r) if r.offset + r.length == b.offset => r.length += len,
            _ => out.push(DmaRange::new(b.offset, len)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buddy::Chunk;

    #[test]
    fn sizes_of_the_four_resolutions() {
        let sizes: Vec<u64> = RESOLUTIONS.iter().map(Framebuffer::size).collect();
        assert_eq!(sizes, vec![8_294_400, 14_745_600, 33_177_600, 132_710_400]);
        // 8K at 4 KiB is the 32,400 ranges validator::STRICT_MAX_NR_RANGES cites.
        assert_eq!(RESOLUTIONS[3].size() / 4096, 32_400);
        let odd = Framebuffer { name: "odd", width: 1366, height: 768, bpp: 32, pitch_align: 256 };
        assert_eq!(odd.pitch(), 5632);
    }

    #[test]
    fn merges_adjacent_consecutive_blocks_only() {
        let b = Buddy::new(1 << 20, Chunk::K4).unwrap();
        let blk = |offset, order| Block { offset, order };
        let r = merge_ranges(&b, &[blk(0, 1), blk(0x2000, 0), blk(0x8000, 0), blk(0x4000, 1), blk(0x6000, 0)]);
        let pairs: Vec<(u64, u64)> = r.iter().map(|r| (r.offset, r.length)).collect();
        assert_eq!(pairs, vec![(0, 0x3000), (0x8000, 0x1000), (0x4000, 0x3000)]);
        assert!(merge_ranges(&b, &[]).is_empty());
    }

    #[test]
    fn a_fresh_vram_gives_one_range() {
        let mut b = Buddy::new(1 << 30, Chunk::K4).unwrap();
        let blocks = b.alloc(RESOLUTIONS[2].size(), false).unwrap();
        assert!(blocks.len() > 1);
        // Splitting a fresh root hands out consecutive blocks: one range.
        assert_eq!(merge_ranges(&b, &blocks).len(), 1);
    }
}
