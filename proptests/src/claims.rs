//! The claims the property suite proves, as data: one row per `fn prop_*`
//! under `tests/`, with the claim it states. The RFC generator (`rfc`)
//! prints this table; `tests/claims_listed.rs` fails when a property has no
//! row or a row has no property.

/// One property and the claim it proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The test function, `prop_...`.
    pub name: &'static str,
    /// Its file, relative to `proptests/`.
    pub file: &'static str,
    /// What it proves, in one paragraph (markdown).
    pub claim: &'static str,
}

/// Every property of the suite, in file order.
pub const CLAIMS: &[Claim] = &[
    Claim {
        name: "prop_well_formed_request_inside_an_mmio_bar_is_a_dmabuf_of_the_sum",
        file: "tests/checks_restated.rs",
        claim: "The base the properties below break: a well-formed request of ranges inside an MMIO BAR is a \
             dma-buf of the sum of their lengths, under both policies.",
    },
    Claim {
        name: "prop_argsz_below_8_is_einval_first",
        file: "tests/checks_restated.rs",
        claim: "argsz below `struct vfio_device_feature` is EINVAL before anything else is looked at.",
    },
    Claim {
        name: "prop_unknown_feature_flag_is_einval_after_argsz",
        file: "tests/checks_restated.rs",
        claim: "A flag bit outside the feature index, GET, SET and PROBE is EINVAL once argsz covers the feature \
             header.",
    },
    Claim {
        name: "prop_get_and_set_without_probe_is_einval_for_any_feature",
        file: "tests/checks_restated.rs",
        claim: "GET and SET together without PROBE is EINVAL, for any feature index.",
    },
    Claim {
        name: "prop_set_on_dma_buf_is_einval_even_with_probe",
        file: "tests/checks_restated.rs",
        claim: "DMA_BUF is GET-only: SET (alone, with PROBE, or with PROBE and GET) is EINVAL, even a probe.",
    },
    Claim {
        name: "prop_dma_buf_without_get_is_einval",
        file: "tests/checks_restated.rs",
        claim: "DMA_BUF with neither GET, SET nor PROBE is EINVAL.",
    },
    Claim {
        name: "prop_argsz_below_24_is_einval_after_the_feature_checks",
        file: "tests/checks_restated.rs",
        claim: "A GET whose argsz covers the feature header but not the dma-buf header is EINVAL, whatever the \
             memory behind it.",
    },
    Claim {
        name: "prop_unreadable_header_is_efault_after_the_feature_checks",
        file: "tests/checks_restated.rs",
        claim: "An unreadable dma-buf header is EFAULT once the feature checks pass.",
    },
    Claim {
        name: "prop_nr_ranges_zero_is_einval_after_header_checks",
        file: "tests/checks_restated.rs",
        claim: "`nr_ranges == 0` is EINVAL after the header checks, before the header's flags, the region and \
             the open flags are looked at.",
    },
    Claim {
        name: "prop_nonzero_header_flags_are_einval_before_the_region",
        file: "tests/checks_restated.rs",
        claim: "Non-zero dma-buf header flags are EINVAL, before the region and the Strict header rules.",
    },
    Claim {
        name: "prop_strict_bad_open_flags_are_einval_before_the_region",
        file: "tests/checks_restated.rs",
        claim: "Strict: open flags other than an access mode plus `O_CLOEXEC` (or the access mode 3) are EINVAL, \
             before the region; Linux ignores them.",
    },
    Claim {
        name: "prop_strict_nr_ranges_above_cap_is_e2big_before_the_region",
        file: "tests/checks_restated.rs",
        claim: "Strict: more than 65,536 ranges is E2BIG, before the region and before argsz is compared with \
             them.",
    },
    Claim {
        name: "prop_strict_argsz_short_of_the_ranges_is_einval_before_the_region",
        file: "tests/checks_restated.rs",
        claim: "Strict: an argsz that does not cover the announced ranges is EINVAL, before the region.",
    },
    Claim {
        name: "prop_region_past_the_bars_is_enodev_after_the_header",
        file: "tests/checks_restated.rs",
        claim: "A region index past the six BARs (ROM, config, VGA, anything) is ENODEV once the header passes, \
             under Linux whatever argsz and the open flags say.",
    },
    Claim {
        name: "prop_absent_bar_is_enodev_at_every_index",
        file: "tests/checks_restated.rs",
        claim: "An absent BAR, at every index, is ENODEV before the range array is sized or read.",
    },
    Claim {
        name: "prop_range_array_above_kmalloc_max_is_enomem_before_the_copy",
        file: "tests/checks_restated.rs",
        claim: "Linux: a range array larger than `KMALLOC_MAX_SIZE` is ENOMEM, on an MMIO or I/O BAR, before the \
             array is read.",
    },
    Claim {
        name: "prop_unreadable_range_array_is_efault_before_any_range",
        file: "tests/checks_restated.rs",
        claim: "A range array not all readable is EFAULT, before any range is looked at, on an MMIO or I/O BAR.",
    },
    Claim {
        name: "prop_first_zero_length_range_is_einval_in_range_order",
        file: "tests/checks_restated.rs",
        claim: "The first zero-length range is EINVAL, whatever its offset and wherever the earlier ranges \
             point; a range announced and readable but not written reads as zero and counts as one.",
    },
    Claim {
        name: "prop_first_unaligned_range_is_einval_in_range_order",
        file: "tests/checks_restated.rs",
        claim: "The first range with an unaligned offset or length is EINVAL.",
    },
    Claim {
        name: "prop_running_total_overflow_is_einval_at_the_range_that_wraps",
        file: "tests/checks_restated.rs",
        claim: "The first range whose length makes the running total overflow is EINVAL.",
    },
    Claim {
        name: "prop_total_with_bit_63_is_einval_after_the_first_loop",
        file: "tests/checks_restated.rs",
        claim: "A total with bit 63 set (`DMA_IOVA_USE_SWIOTLB`) is EINVAL once every range passed the first \
             loop, before the BAR kind is looked at.",
    },
    Claim {
        name: "prop_io_bar_is_einval_at_every_index_after_the_first_loop",
        file: "tests/checks_restated.rs",
        claim: "An I/O BAR, at every index, is EINVAL once the ranges passed the first loop, whether they lie \
             inside it or not.",
    },
    Claim {
        name: "prop_strict_first_range_outside_the_bar_is_einval",
        file: "tests/checks_restated.rs",
        claim: "Strict: the first range outside the BAR (`offset + length > bar_len`) is EINVAL, wherever the \
             BAR sits.",
    },
    Claim {
        name: "prop_linux_first_range_past_2_pow_64_is_eoverflow",
        file: "tests/checks_restated.rs",
        claim: "Linux: the first range whose `bar_start + offset + length` wraps is EOVERFLOW.",
    },
    Claim {
        name: "prop_linux_first_range_beyond_the_bar_end_is_einval",
        file: "tests/checks_restated.rs",
        claim: "Linux: the first range that ends past the BAR without wrapping is EINVAL.",
    },
    Claim {
        name: "prop_validator_linux_matches_every_recorded_kernel_answer",
        file: "tests/kernel_corpus.rs",
        claim: "The validator under `Policy::Linux` answers every recorded request as the real kernel did: same \
             errno, same dma-buf size, probe for probe.",
    },
    Claim {
        name: "prop_single_range_equivalence",
        file: "tests/props.rs",
        claim: "Single-range equivalence: the original single-range struct (`Shim::export_single`) and the \
             multi-range request with `nr_ranges = 1` built from it (`Shim::export`) are accepted or rejected \
             together, with the same errno; when accepted they give the same dma-buf, the same sg table on \
             every path (BUS_ADDR, IOVA span, per-range IOMMU, dma-direct) and the same model state. They \
             differ only when the multi-range request fails a check of a field the single form does not have \
             (argsz < 8 or < 24, dma-buf flags != 0, Strict's argsz < 40, an unreadable header or range); the \
             multi-range rejection is then the earliest, in kernel check order, of those checks and the \
             single form's own rejection.",
    },
    Claim {
        name: "prop_decomposition",
        file: "tests/props.rs",
        claim: "Decomposition: a well-formed multi-range request is accepted iff each of its ranges is accepted \
             as a single-range request and the combined limits hold (total length without 64-bit overflow and \
             with bit 63 clear, range array within KMALLOC_MAX_SIZE, Strict's nr_ranges cap). In Fixed mode \
             its sg table on the BUS_ADDR and per-range paths is the concatenation of the single-range ones \
             (same bytes reached, in order); on the IOVA path it is one contiguous span of the total size, \
             which N single-range dma-bufs (N separate tables) never give an importer.",
    },
    Claim {
        name: "prop_kernel_mode_links_every_range_at_iova_offset_zero",
        file: "tests/props.rs",
        claim: "Kernel fidelity (a documented kernel fact, confirmed by the kernel lab on 7.2.13 and 7.3.4, not \
             a property of the proposal): Linux links every range of an IOVA-span mapping at offset 0 of the \
             span, so in `Fidelity::Kernel` (Linux 7.2.13) mapping an accepted dma-buf of two or more ranges through an \
             IOMMU with the IOVA API fails at range 1 with the IOMMU driver's PTE-collision errno (EADDRINUSE \
             on VT-d, EEXIST on io-pgtable-arm) and leaves the state as it was; one-range dma-bufs and every \
             other path behave exactly as in `Fidelity::Fixed`.",
    },
    Claim {
        name: "prop_encode_decode_roundtrip",
        file: "tests/props.rs",
        claim: "Bytes round-trip: `RequestBuilder::encode` followed by `Request::decode` gives back every field \
             (argsz, feature flags, region_index, open_flags, flags, nr_ranges, the ranges) for arbitrary \
             values, hostile ones included, and the readable length is the encoding's length minus the \
             feature header.",
    },
    Claim {
        name: "prop_decode_arbitrary_bytes_never_panics",
        file: "tests/props.rs",
        claim: "Decoding arbitrary bytes never panics: any input of 8 bytes or more decodes (shorter ones are a \
             typed error), whole 16-byte ranges after the 24 header bytes are the range list, and validating \
             the result under both policies and exporting it through the shim never panics.",
    },
    Claim {
        name: "prop_strict_within_linux",
        file: "tests/props.rs",
        claim: "Strict within Linux: on any request and any device, Strict never accepts what Linux rejects (and \
             accepts with the identical dma-buf what it accepts), and whenever Strict's answer differs from \
             Linux's it is one of Strict's four documented rules (open_flags, nr_ranges cap, argsz covering \
             the ranges, BAR-relative bounds) whose stated condition holds for the request.",
    },
    Claim {
        name: "prop_shim_exports_exactly_what_the_validator_accepts",
        file: "tests/props.rs",
        claim: "Validator and shim agree: for any request and both policies, the shim exports a dma-buf exactly \
             when the validator accepts, with the same size, physical vectors, BAR and open_flags, and \
             otherwise fails with the validator's rejection and errno, leaving the state untouched.",
    },
    Claim {
        name: "prop_shim_agrees_with_the_validator_for_many_ranges",
        file: "tests/props.rs",
        claim: "Validator and shim agree at scale: requests of 1 to 2,000 ranges (page-sized, scattered, \
             overlapping) are exported by the shim exactly when the validator accepts them, and map on every \
             path with the predicted path and every invariant holding.",
    },
    Claim {
        name: "prop_sg_invariants_on_every_path",
        file: "tests/props.rs",
        claim: "sg invariants on every path: for every accepted request — page sizes 4/16/64 KiB, every MMIO \
             BAR, overlapping and unordered ranges — the map through each path takes the predicted path or \
             fails with the predicted error, and `check_invariants` holds after every step (sg entries \
             non-empty, page-aligned, at most MAX_SG_ENT_SZ, summing to the size, translating to the \
             requested bytes in order, IOMMU and allocation accounting exact).",
    },
    Claim {
        name: "prop_sg_invariants_for_ranges_of_4gib_and_more",
        file: "tests/props.rs",
        claim: "sg invariants for large dma-bufs: single ranges of 4 GiB or more (each split into MAX_SG_ENT_SZ \
             entries) and totals above 4 GiB hold every invariant on every path.",
    },
    Claim {
        name: "prop_sg_invariants_with_a_translating_host_bridge",
        file: "tests/props.rs",
        claim: "sg invariants behind a translating host bridge: with any page-aligned bus offset \
             (`pci_bus_address() - pci_resource_start()`, wrapping, as on many arm64 and ppc64 hosts), the \
             BUS_ADDR sg table holds the BAR's bus addresses (physical + offset, wrapping) and every path \
             keeps every invariant, the bus-to-physical walk included.",
    },
    Claim {
        name: "prop_revoke_unreachable_then_restore",
        file: "tests/props.rs",
        claim: "Revocation: after memory-disable, reset or device close, no mapping is left and no IOMMU \
             importer reaches any BAR byte; BUS_ADDR and dma-direct importers reach nothing while memory \
             decoding is off and reach the BAR by address again once it is back (the documented fact that \
             nothing but the importer stops DMA on those paths); maps and attaches of a revoked dma-buf fail \
             with ENODEV; re-enabling memory restores maps that reach the same bytes, and close (which in \
             7.2.13 revokes through the same drain of every mapping's reference) revokes for good.",
    },
    Claim {
        name: "prop_iommufd_maps_one_range_dma_bufs_only",
        file: "tests/props.rs",
        claim: "iommufd as importer (Linux 7.2.13's `vfio_pci_dma_buf_iommufd_map()`; the one- and two-range \
             answers measured by the kernel lab's selftest on the 7.2.13 lab kernel): `IOMMU_IOAS_MAP_FILE` of \
             an accepted dma-buf maps iff it has exactly one range and is EOPNOTSUPP otherwise, leaving the state \
             as it was; a mapped area translates to the dma-buf's bytes; memory disable cuts the translation and \
             a new MAP_FILE is ENODEV while revoked; UNMAP leaves the IOAS idle.",
    },
    Claim {
        name: "prop_lifecycle_interleavings_keep_counters_consistent",
        file: "tests/props.rs",
        claim: "Lifecycle state machine: any interleaving of export, attach, map, unmap, detach, fd close \
             (release), memory disable/enable, reset, device close/open and armed faults returns from every \
             call (nothing blocks: revocation completes with no mapping left), keeps live dma-bufs, \
             attachments and mappings equal to a reference model, revoked exactly when off the device list or \
             memory is disabled, no IOMMU translation towards a revoked dma-buf, every failed call leaving \
             the state unchanged, and a full teardown leaving nothing.",
    },
    Claim {
        name: "prop_fault_at_any_step_leaves_state_unchanged",
        file: "tests/props.rs",
        claim: "Faults: with a fault armed at any step of any site (allocation, IOVA allocation, IOVA link, \
             dma_map_phys, IOVA sync, fd install) in Fixed mode, export + attach + map either succeed or the \
             first failing call fails with the fault's errno (or the request's own rejection) and leaves the \
             model state exactly as before the call; an IOVA-allocation fault only moves the map to the \
             per-range path.",
    },
    Claim {
        name: "prop_linux_oob_errno_depends_on_bar_address_strict_does_not",
        file: "tests/props.rs",
        claim: "Out-of-bounds errno: for a range that does not fit in its BAR, Linux answers EOVERFLOW when BAR \
             start + offset + length overflows 64 bits and EINVAL otherwise, so its errno depends on (and \
             reveals) the BAR's physical address; Strict answers EINVAL (StrictRangeOutsideBar) for every BAR \
             address.",
    },
    Claim {
        name: "prop_linux_ignores_argsz",
        file: "tests/props.rs",
        claim: "argsz is ignored by Linux: for any argsz of at least 24 (feature header + dma-buf header), \
             Linux's verdict does not depend on argsz, even when it covers fewer ranges than nr_ranges \
             announces or far more; Strict's differs from it only by StrictArgszShort, exactly when argsz \
             does not cover the announced ranges.",
    },
    Claim {
        name: "prop_validator_is_deterministic_and_alignment_independent",
        file: "tests/props.rs",
        claim: "The validator is a deterministic function of the request's contents: the same bytes decoded at \
             any alignment, or the same request judged twice, give the same verdict under both policies.",
    },
    Claim {
        name: "prop_fast_path_gives_the_verdict_of_the_checks_one_by_one",
        file: "tests/validator_surface.rs",
        claim: "The validator's branch-free fast path decides exactly as the checks made one by one, under both \
             policies, for any BAR (also those of 2^62 bytes or more, or whose physical end wraps, outside the \
             fast path's proof) and for ranges announced but not written.",
    },
    Claim {
        name: "prop_export_is_the_ranges_at_the_bar_start",
        file: "tests/validator_surface.rs",
        claim: "An accepted request's dma-buf has the request's ranges in order, each at the BAR's physical start \
             plus its offset, and their sum as its size.",
    },
    Claim {
        name: "prop_errno_numbers_and_names_are_asm_generic",
        file: "tests/validator_surface.rs",
        claim: "Every errno the project names has asm-generic's number and symbolic name, both ways, and prints \
             as that name; no other number or name is an errno.",
    },
    Claim {
        name: "prop_check_prints_errno_name_range_and_function",
        file: "tests/validator_surface.rs",
        claim: "Every check prints as `ERRNO (Check, range i): kernel function`, the range only for the per-range \
             checks and being the one refused; a Linux check's kernel function is its stage's, a Strict rule's \
             the proposal's.",
    },
    Claim {
        name: "prop_iommufd_map_file_checks_in_the_kernels_order_and_a_refusal_changes_nothing",
        file: "tests/errors_restated.rs",
        claim: "`IOMMU_IOAS_MAP_FILE` of a dma-buf checks in `iopt_map_file_pages()`'s order (no IOAS ENOENT, zero \
             length EINVAL, a wrapping end EOVERFLOW, a closed fd EBADF, then past the dma-buf's end and an \
             unaligned length EINVAL); a refusal changes nothing, an accepted map translates to the BAR's bytes \
             until memory is disabled and UNMAP leaves the IOAS idle.",
    },
    Claim {
        name: "prop_pte_collision_errno_is_the_iommu_drivers",
        file: "tests/errors_restated.rs",
        claim: "Linux 7.2.13 links every range of a multi-range dma-buf at IOVA offset 0, so the map fails at \
             range 1 with the IOMMU driver's answer to a present PTE: EADDRINUSE on VT-d's generic page table \
             (measured), EEXIST on io-pgtable-arm, whichever order the model is chosen in; the unwind changes \
             nothing.",
    },
    Claim {
        name: "prop_iova_allocator_and_page_table_keep_the_kernels_rules",
        file: "tests/shim_restated.rs",
        claim: "The IOMMU domain against a page-by-page reference: `alloc_iova_fast()` hands out whole free \
             granules inside the aperture and fails only when no hole is large enough; a free succeeds exactly for \
             allocated space (else it is counted as bad); `iommu_map()` refuses an empty or already translated \
             range; `iommu_unmap()` returns the bytes it untranslated; the totals, the merged spans, `is_idle`, \
             every translation and the model's memory estimate follow.",
    },
    Claim {
        name: "prop_sg_table_has_calc_sg_nents_entries_and_no_cpu_list",
        file: "tests/shim_restated.rs",
        claim: "On every path the sg table has `calc_sg_nents()` entries (the IOVA span split in `MAX_SG_ENT_SZ` \
             pieces as a whole, else each range on its own) and `orig_nents` 0; a peer behind the same switch \
             takes bus addresses and leaves its own IOMMU domain untouched.",
    },
    Claim {
        name: "prop_sg_table_cap_admits_exactly_its_size",
        file: "tests/shim_restated.rs",
        claim: "The model's cap on `sg_alloc_table()` (standing for its memory) grants a table of exactly that many \
             entries and refuses one more with ENOMEM.",
    },
    Claim {
        name: "prop_calc_sg_nents_counts_max_sg_ent_sz_pieces_or_0_past_32_bits",
        file: "tests/shim_restated.rs",
        claim: "`calc_sg_nents()` is the IOVA span's size in `MAX_SG_ENT_SZ` pieces, or the sum of each range's, \
             and 0 when that sum does not fit 32 bits; `MAX_SG_ENT_SZ` is the largest page-aligned `unsigned int`.",
    },
    Claim {
        name: "prop_model_bytes_count_every_live_vector_and_table",
        file: "tests/shim_restated.rs",
        claim: "The model's memory is each live dma-buf with 16 bytes per physical vector, each live mapping with \
             its sg entries, and the importers' IOMMU domains; nothing for an empty shim.",
    },
    Claim {
        name: "prop_failed_link_after_the_first_range_frees_a_short_iova_span",
        file: "tests/shim_restated.rs",
        claim: "A `dma_iova_link()` failure at range `i` hands back fewer bytes than the span (counted as a short \
             free) exactly when `i > 0`; at `i == 0` Fixed frees the span and the kernel leaks it; the kernel's \
             second range collides at IOVA offset 0 (EADDRINUSE on VT-d, EEXIST on io-pgtable-arm, whichever driver \
             the shim's domains were given before or after they were made); a `dma_iova_sync()` failure frees the \
             whole span, not short.",
    },
    Claim {
        name: "prop_without_get_dmabuf_phys_every_dma_buf_feature_call_is_eopnotsupp",
        file: "tests/shim_restated.rs",
        claim: "Without `get_dmabuf_phys` exactly the DMA_BUF feature calls that the vfio core lets through are \
             EOPNOTSUPP, whatever GET, SET and PROBE say; other features and calls the core refuses are not.",
    },
    Claim {
        name: "prop_peer_reaches_the_bar_only_while_memory_decodes",
        file: "tests/shim_restated.rs",
        claim: "A peer's DMA to a mapped dma-buf reaches the request's physical address on every path while \
             `PCI_COMMAND_MEMORY` is set, nothing while it is clear, and after it is set again only where nothing \
             tore the translation down (bus addresses, dma-direct); the BAR's last byte is reached, the byte after it \
             is not.",
    },
    Claim {
        name: "prop_checker_reports_the_first_byte_a_changed_translation_misses",
        file: "tests/shim_restated.rs",
        claim: "The invariant checker catches an IOMMU changed behind the model's back: a page unmapped or \
             remapped elsewhere is reported at its byte offset with the address wanted and the one reached, and \
             IOVA space no mapping accounts for as a leak with its sizes.",
    },
    Claim {
        name: "prop_every_error_message_names_its_errno",
        file: "tests/shim_restated.rs",
        claim: "Every error of export, attach, map and `IOMMU_IOAS_MAP_FILE` says in its message the errno the \
             kernel returns for it, and the range, where there is one.",
    },
    Claim {
        name: "prop_checker_reports_an_ioas_domain_changed_behind_the_model",
        file: "tests/shim_restated.rs",
        claim: "The invariant checker catches an iommufd IOAS domain changed behind the model's back: IOVA reserved \
             that no area accounts for, an area's page no longer translated, a revoked area translated again; for an \
             area of any page-aligned part of its range.",
    },
    Claim {
        name: "prop_checker_reports_dma_addresses_off_the_page_grid",
        file: "tests/shim_restated.rs",
        claim: "The invariant checker reports an sg entry whose DMA address is off the page grid (a host bridge \
             offset that is not page-aligned) as not page-aligned, at the first entry.",
    },
    Claim {
        name: "prop_checker_reports_a_translation_running_on_past_its_range",
        file: "tests/shim_restated.rs",
        claim: "The invariant checker follows each physical vector to its end even inside one translated run: \
             an IOVA span remapped so that the first range's memory continues where the second range's belongs is \
             reported at the second range's first byte.",
    },
    Claim {
        name: "prop_kernel_unwind_unmaps_every_entry_and_unmap_leaks_the_table",
        file: "tests/shim_restated.rs",
        claim: "Per range, a `dma_map_phys()` failure after `i > 0` ranges makes the kernel's unwind unmap every \
             sg entry, each never filled one as a zero-length unmap (defect 4), and nothing at `i == 0`; Fixed \
             unmaps only the filled ones. An unmap in the kernel leaks the sg array (defect 6). Either way nothing \
             is left in the IOMMU.",
    },
    Claim {
        name: "prop_reset_without_a_reset_method_is_einval_and_touches_nothing",
        file: "tests/shim_restated.rs",
        claim: "`VFIO_DEVICE_RESET` on a device without a reset method is EINVAL and leaves every dma-buf and \
             mapping as it was; with one, it revokes them.",
    },
];

/// The claim of the property `name`, if it has one.
pub fn claim(name: &str) -> Option<&'static Claim> {
    CLAIMS.iter().find(|c| c.name == name)
}
