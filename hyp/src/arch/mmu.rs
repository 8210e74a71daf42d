//! The hypervisor's own stage-1 translation at EL2, built with aarch64-paging.
//!
//! * VA = PA for everything the hypervisor itself touches, 39-bit (TCR_EL2.T0SZ = 25), 4 KiB
//!   granule, starting at level 1.
//! * RAM (minus reserved-memory, which may belong to the RMM) is Normal write-back, mapped with
//!   4 KiB pages so that any single granule can be unmapped without splitting a live block
//!   (break-before-make): a granule delegated to the Realm PAS must not stay mapped for the host.
//! * The same RAM appears a second time at [`RMM_ALIAS_OFFSET`] + PA, in blocks, never unmapped:
//!   that is the embedded RMM model's view (TF-RMM maps Realm-PAS granules through its own
//!   slots; the model does it through this alias), so delegated granules stay reachable for the
//!   model while the host's own access to them faults, as a GPF would on real hardware.
//! * The console and the GIC are Device-nGnRE, execute-never.
//!
//! Register writes follow Arm ARM D8 (VMSAv8-64) with the barriers the architecture requires:
//! MAIR/TCR before TTBR, `dsb ish; isb` before SCTLR_EL2.M, `isb` after.

use crate::addr::{MemRange, PhysAddr};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{MAIR_EL2, ReadWriteable, Readable, SCTLR_EL2, TCR_EL2, Writeable};
use aarch64_paging::descriptor::VirtualAddress;
use aarch64_paging::descriptor::{El23Attributes as A, PhysicalAddress};
use aarch64_paging::idmap::IdTranslation;
use aarch64_paging::paging::{Constraints, MemoryRegion, TranslationRegime};
use aarch64_paging::{MapError, Mapping};
use spin::{Mutex, Once};

/// Stage-1 start level: level 1 covers 512 GiB with T0SZ = 25.
const ROOT_LEVEL: usize = 1;
/// VA width of the map.
pub const VA_BITS: u32 = 39;
/// Where the RMM model's alias of RAM starts (VA = PA + offset); RAM must lie below it.
pub const RMM_ALIAS_OFFSET: u64 = 1 << 38;

/// MAIR_EL2 index 0: Device-nGnRE; index 1: Normal, inner/outer write-back, read/write-allocate.
const DEVICE: A = A::ATTRIBUTE_INDEX_0;
const NORMAL: A = A::ATTRIBUTE_INDEX_1;

fn normal() -> A {
    A::VALID | NORMAL | A::INNER_SHAREABLE | A::ACCESSED
}
fn device() -> A {
    A::VALID | DEVICE | A::ACCESSED | A::XN
}

fn region(start: u64, end: u64) -> MemoryRegion {
    MemoryRegion::new(start as usize, end as usize)
}

/// Why the stage-1 map could not be installed.
#[derive(Debug)]
pub enum Stage1Error {
    Map(MapError),
    /// The RAM to be mapped does not contain the whole image: turning the MMU on would pull the
    /// code or stack out from under us.
    ImageNotCovered(MemRange),
    ConsoleNotMapped(MemRange),
    /// RAM reaches into the RMM alias.
    RamTooHigh(MemRange),
}

impl core::fmt::Display for Stage1Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Map(e) => write!(f, "{e}"),
            Self::ImageNotCovered(r) => write!(f, "image {r} is not inside the RAM to be mapped"),
            Self::ConsoleNotMapped(r) => write!(f, "console {r} is not among the device ranges"),
            Self::RamTooHigh(r) => write!(f, "RAM {r} overlaps the RMM alias at {RMM_ALIAS_OFFSET:#x}"),
        }
    }
}

/// The non-secure EL2 regime, with TLB maintenance on this CPU only (`tlbi vae2`, not the
/// broadcast `vae2is` aarch64-paging's `El2` uses).
///
/// Why: the only changes made to the live map are granules delegated (unmapped) or undelegated
/// (mapped again). Under multi-threaded QEMU a broadcast TLBI stops every vCPU thread, which made
/// each protected fault cost milliseconds with four CPUs. The other CPUs drop their EL2 TLB
/// entries (`tlbi alle2`) after every exit from a guest, which is the only time they run host code
/// between two delegations, so a stale entry cannot outlive the realm exit being handled.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct El2ThisCpu;

impl TranslationRegime for El2ThisCpu {
    type Attributes = A;
    type Asid = ();
    type VaRange = ();

    fn invalidate_va(va: VirtualAddress) {
        let page = (va.0 >> 12) as u64;
        // SAFETY: TLB maintenance only.
        unsafe {
            core::arch::asm!("tlbi vae2, {}", "dsb nsh", in(reg) page, options(nostack, preserves_flags))
        };
    }

    unsafe fn activate(root_pa: PhysicalAddress, _asid: (), _va_range: ()) -> usize {
        let previous: u64;
        // SAFETY: the caller (Mapping::activate) guarantees the root is a live table.
        unsafe {
            core::arch::asm!("mrs {}, ttbr0_el2", "msr ttbr0_el2, {}", "isb", out(reg) previous, in(reg) root_pa.0,
                options(nostack, preserves_flags));
        }
        previous as usize
    }

    unsafe fn deactivate(_previous: usize, _asid: (), _va_range: ()) {
        // The hypervisor never switches its EL2 map off.
    }
}

/// Drop this CPU's EL2 TLB entries (after a guest exit; see [`El2ThisCpu`]).
pub fn flush_local_el2_tlb() {
    // SAFETY: TLB maintenance only.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", "isb", options(nostack, preserves_flags)) };
}

/// The EL2 map.
pub struct Stage1 {
    map: Mapping<IdTranslation<A>, El2ThisCpu>,
}

// SAFETY: the tables are only reached through the `STAGE1` mutex; the raw pointers inside
// `Mapping` point at heap-allocated tables that no other owner aliases.
unsafe impl Send for Stage1 {}

static STAGE1: Once<Mutex<Stage1>> = Once::new();
static PA_BITS: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
/// TTBR0_EL2 of the installed map, for the secondary CPUs.
static ROOT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

impl Stage1 {
    /// Build the map of `ram` (identity, page granular, plus the RMM alias) and `devices`, check
    /// that it covers the image and the console, and turn the EL2 MMU on with it. The map lives
    /// for the rest of the run, reachable through [`with`].
    pub fn install(
        ram: &[MemRange],
        devices: &[MemRange],
        console: MemRange,
        pa_bits: u32,
    ) -> Result<(), Stage1Error> {
        let image = super::layout::image();
        if !ram.iter().any(|r| r.start <= image.start && image.end <= r.end) {
            return Err(Stage1Error::ImageNotCovered(image));
        }
        if !devices.contains(&console) {
            return Err(Stage1Error::ConsoleNotMapped(console));
        }
        if let Some(r) = ram.iter().find(|r| r.end.0 > RMM_ALIAS_OFFSET) {
            return Err(Stage1Error::RamTooHigh(*r));
        }
        let mut map = Mapping::new(IdTranslation::new(), ROOT_LEVEL, El2ThisCpu);
        for r in ram {
            map.map_range(
                &region(r.start.0, r.end.0),
                PhysicalAddress(r.start.0 as usize),
                normal(),
                Constraints::NO_BLOCK_MAPPINGS,
            )
            .map_err(Stage1Error::Map)?;
            map.map_range(
                &region(r.start.0 + RMM_ALIAS_OFFSET, r.end.0 + RMM_ALIAS_OFFSET),
                PhysicalAddress(r.start.0 as usize),
                normal() | A::XN,
                Constraints::empty(),
            )
            .map_err(Stage1Error::Map)?;
        }
        for d in devices {
            map.map_range(
                &region(d.start.0, d.end.0),
                PhysicalAddress(d.start.0 as usize),
                device(),
                Constraints::empty(),
            )
            .map_err(Stage1Error::Map)?;
        }
        PA_BITS.store(pa_bits, core::sync::atomic::Ordering::Relaxed);
        let stage1 = STAGE1.call_once(|| Mutex::new(Self { map }));
        // SAFETY: the map covers the whole image (code, data, stack, heap — checked above) and
        // the console; every other address the hypervisor uses is RAM from `ram`, its alias, or a
        // device in `devices`. The tables live in a static, so they outlive their use in TTBR0_EL2.
        unsafe { stage1.lock().enable(pa_bits) };
        let root = stage1.lock().map.root_address().0 as u64;
        ROOT.store(root, core::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Turn the MMU on at EL2 with this map.
    ///
    /// # Safety
    /// The map must cover the image (code, data, stack, heap), the console and every address the
    /// hypervisor touches afterwards, with the attributes it relies on; `self` must live forever.
    unsafe fn enable(&mut self, pa_bits: u32) {
        // SAFETY: the caller guarantees the map covers everything the hypervisor uses and lives
        // forever; activate() writes TTBR0_EL2 and marks the map live for break-before-make checks.
        unsafe {
            set_translation_regs(pa_bits);
            self.map.activate();
            turn_on();
        }
    }

    /// Turn the MMU on for a secondary CPU with the map CPU 0 installed, without taking any lock
    /// (with the MMU off, memory is Device memory, where atomics are not to be relied on).
    /// `false` if there is no map yet.
    pub fn enable_secondary() -> bool {
        let root = ROOT.load(core::sync::atomic::Ordering::Acquire);
        if root == 0 {
            return false;
        }
        let pa_bits = PA_BITS.load(core::sync::atomic::Ordering::Relaxed);
        // SAFETY: the same tables CPU 0 runs with: they cover the whole image (so every CPU's
        // stack) and live in a static for the rest of the run.
        unsafe { load_regs(pa_bits, root) };
        true
    }

    /// Whether the EL2 MMU is on.
    pub fn enabled() -> bool {
        SCTLR_EL2.is_set(SCTLR_EL2::M)
    }

    /// Make one RAM page inaccessible to the host (a granule delegated to the Realm PAS) or
    /// accessible again. aarch64-paging invalidates the entry on this CPU through [`El2ThisCpu`]
    /// (`tlbi vae2`, not the broadcast `vae2is`); the other CPUs drop theirs with `tlbi alle2` at
    /// their next guest exit, before they run host code again.
    pub fn set_page_mapped(&mut self, pa: PhysAddr, mapped: bool) -> Result<(), MapError> {
        let page = region(pa.0, pa.0 + 1);
        self.map.modify_range(&page, &|_, d| {
            if mapped { d.modify_flags(A::VALID, A::empty()) } else { d.modify_flags(A::empty(), A::VALID) }
        })?;
        barrier::dsb(barrier::ISH);
        barrier::isb(barrier::SY);
        Ok(())
    }
}

/// MAIR_EL2 and TCR_EL2 for the identity map.
///
/// # Safety
/// Only before the MMU is on (the attributes of live mappings must not change under them).
unsafe fn set_translation_regs(pa_bits: u32) {
    let ps = match pa_bits {
        ..=32 => TCR_EL2::PS::Bits_32,
        33..=36 => TCR_EL2::PS::Bits_36,
        37..=40 => TCR_EL2::PS::Bits_40,
        41..=42 => TCR_EL2::PS::Bits_42,
        43..=44 => TCR_EL2::PS::Bits_44,
        _ => TCR_EL2::PS::Bits_48,
    };
    MAIR_EL2.write(
        MAIR_EL2::Attr0_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL2::Attr1_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL2::Attr1_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    // TCR_EL2 (E2H = 0) bits 31 and 23 are RES1.
    TCR_EL2.set(
        (1 << 31)
            | (1 << 23)
            | (TCR_EL2::T0SZ.val(64 - VA_BITS as u64)
                + TCR_EL2::TG0::KiB_4
                + TCR_EL2::SH0::Inner
                + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
                + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
                + ps)
                .value,
    );
    barrier::isb(barrier::SY);
}

/// SCTLR_EL2: MMU and caches on, after the barriers the architecture asks for and with this
/// CPU's EL2 TLB emptied first: TLB contents are UNKNOWN out of reset and firmware may have run at
/// EL2 with other tables (Arm ARM D8.14, "TLB maintenance before enabling the MMU"). The local
/// `tlbi alle2` is enough — every CPU runs this before its own MMU goes on, and the broadcast
/// form would stop every vCPU thread under multi-threaded QEMU ([`El2ThisCpu`]).
///
/// # Safety
/// TTBR0_EL2, MAIR_EL2 and TCR_EL2 must describe a map of everything in use.
unsafe fn turn_on() {
    barrier::dsb(barrier::ISH);
    // SAFETY: TLB maintenance only, with the MMU still off.
    unsafe { core::arch::asm!("tlbi alle2", "dsb nsh", options(nostack, preserves_flags)) };
    barrier::isb(barrier::SY);
    SCTLR_EL2.modify(SCTLR_EL2::M::Enable + SCTLR_EL2::C::Cacheable + SCTLR_EL2::I::Cacheable);
    barrier::isb(barrier::SY);
}

/// A secondary CPU's registers for the map at `root`.
///
/// # Safety
/// `root` must be the installed map's root (see [`Stage1::enable_secondary`]).
unsafe fn load_regs(pa_bits: u32, root: u64) {
    // SAFETY: per this function's contract.
    unsafe {
        set_translation_regs(pa_bits);
        core::arch::asm!("msr ttbr0_el2, {}", "isb", in(reg) root, options(nostack, preserves_flags));
        turn_on();
    }
}

/// Run `f` on the installed stage-1 map (`None` before [`Stage1::install`]).
pub fn with<T>(f: impl FnOnce(&mut Stage1) -> T) -> Option<T> {
    STAGE1.get().map(|m| f(&mut m.lock()))
}

/// Stage-1 descriptor bits the lock-free path reads (Arm ARM D8.3): VALID, and at levels 1–2
/// TABLE (with VALID: a table descriptor; at level 3 the same bit marks a page), and the output
/// address field of a 4 KiB-granule descriptor.
const DESC_VALID: u64 = 1 << 0;
const DESC_TABLE_OR_PAGE: u64 = 1 << 1;
const DESC_ADDRESS: u64 = 0x0000_ffff_ffff_f000;

/// [`Stage1::set_page_mapped`] without the map's lock, for the RMM model's DELEGATE/UNDELEGATE
/// on several CPUs at once: RAM is mapped with 4 KiB pages that are never split or freed, so the
/// level-3 descriptor of `pa` stays where the walk finds it and only its VALID bit changes — a
/// single atomic update of one word that no other CPU changes at the same time (the model
/// delegates a granule under that granule's lock). Falls back to the locked path (and its
/// error) if the walk does not end at a level-3 page descriptor.
pub fn set_page_mapped_concurrent(pa: PhysAddr, mapped: bool) -> Option<Result<(), MapError>> {
    let root = ROOT.load(core::sync::atomic::Ordering::Acquire);
    if root == 0 || pa.0 >= 1 << VA_BITS {
        return with(|s| s.set_page_mapped(pa, mapped));
    }
    let mut table = root;
    let mut entry = core::ptr::null_mut::<u64>();
    for level in ROOT_LEVEL..=3 {
        let shift = 12 + 9 * (3 - level);
        let slot = (table + ((pa.0 >> shift) & 511) * 8) as *mut u64;
        // SAFETY: `table` is a live table of the installed map (the root, or the address in a
        // valid table descriptor read at the level above), identity-mapped; tables are never
        // freed. A volatile read of one aligned word.
        let desc = unsafe { core::ptr::read_volatile(slot) };
        let table_or_page = desc & (DESC_VALID | DESC_TABLE_OR_PAGE) == DESC_VALID | DESC_TABLE_OR_PAGE;
        if level < 3 {
            if !table_or_page {
                return with(|s| s.set_page_mapped(pa, mapped));
            }
            table = desc & DESC_ADDRESS;
        } else if desc & DESC_TABLE_OR_PAGE != 0 && desc & DESC_ADDRESS == pa.0 & DESC_ADDRESS {
            entry = slot;
        }
    }
    if entry.is_null() {
        return with(|s| s.set_page_mapped(pa, mapped));
    }
    // SAFETY: `entry` is the aligned level-3 descriptor of `pa` in a table that lives forever;
    // every change to it after the map was installed is this atomic update (the locked path
    // changes it only through the same VALID bit, and never for a granule the model is
    // delegating on another CPU).
    let e = unsafe { core::sync::atomic::AtomicU64::from_ptr(entry) };
    if mapped {
        e.fetch_or(DESC_VALID, core::sync::atomic::Ordering::Release);
    } else {
        e.fetch_and(!DESC_VALID, core::sync::atomic::Ordering::Release);
    }
    let page = pa.0 >> 12;
    // SAFETY: TLB maintenance only: the descriptor write reaches the table walker (dsb ishst)
    // before this CPU's entry for the page goes (tlbi vae2, as El2ThisCpu does; the other CPUs
    // drop theirs at their next guest exit), and later accesses see the new mapping.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vae2, {}",
            "dsb ish",
            "isb",
            in(reg) page,
            options(nostack, preserves_flags)
        )
    };
    Some(Ok(()))
}
