//! Physical memory as the embedded RMM model sees it: RAM through the alias at
//! `RMM_ALIAS_OFFSET` (never unmapped), while DELEGATE/UNDELEGATE unmap and remap the granule in
//! the hypervisor's own identity map, so a host access to a delegated granule faults like a GPF.

use super::guest::VTTBR_VMID_SHIFT;
use super::mmu::{self, RMM_ALIAS_OFFSET};
use crate::addr::{MemRange, PAGE_SIZE, PhysAddr};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, VTTBR_EL2, Writeable};
use alloc::vec::Vec;
use rmm_model::Memory;

/// RAM the model may use as granules (the DTB's memory minus reservations).
pub struct RmmMemory {
    ram: Vec<MemRange>,
}

impl RmmMemory {
    pub fn new(ram: Vec<MemRange>) -> Self {
        Self { ram }
    }

    fn inside(&self, pa: u64, len: usize) -> bool {
        let end = pa.saturating_add(len as u64);
        self.ram.iter().any(|r| r.start.0 <= pa && end <= r.end.0)
    }

    fn alias(pa: u64) -> *mut u8 {
        (pa + RMM_ALIAS_OFFSET) as *mut u8
    }
}

impl Memory for RmmMemory {
    fn is_granule(&self, pa: u64) -> bool {
        pa.is_multiple_of(PAGE_SIZE) && self.inside(pa, PAGE_SIZE as usize)
    }

    fn read_u64(&self, pa: u64) -> u64 {
        if !pa.is_multiple_of(8) || !self.inside(pa, 8) {
            return 0;
        }
        // SAFETY: `pa` is aligned RAM (checked), mapped Normal at its alias for the whole run.
        unsafe { core::ptr::read_volatile(Self::alias(pa) as *const u64) }
    }

    fn write_u64(&self, pa: u64, value: u64) {
        if pa.is_multiple_of(8) && self.inside(pa, 8) {
            // SAFETY: as for read_u64; the model writes only granules it owns (RTTs, data, RD).
            unsafe { core::ptr::write_volatile(Self::alias(pa) as *mut u64, value) }
        }
    }

    fn read_bytes(&self, pa: u64, out: &mut [u8]) {
        if self.inside(pa, out.len()) {
            // SAFETY: the range is RAM (checked), mapped at its alias; `out` is a distinct buffer.
            unsafe { core::ptr::copy_nonoverlapping(Self::alias(pa), out.as_mut_ptr(), out.len()) }
        }
    }

    fn write_bytes(&self, pa: u64, data: &[u8]) {
        if self.inside(pa, data.len()) {
            // SAFETY: the range is RAM (checked), mapped at its alias; `data` is a distinct buffer.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), Self::alias(pa), data.len()) }
        }
    }

    fn invalidate_s2(&self, vmid: u16) {
        // As TF-RMM's stage2_tlbi_ipa: make `vmid` the current VMID (VTTBR_EL2 holds whichever
        // realm last ran on this CPU, maybe another), invalidate its stage-2 and combined entries
        // on every CPU (IS), then put VTTBR_EL2 back. Nothing at EL2 translates through it.
        let old = VTTBR_EL2.get();
        VTTBR_EL2.set(u64::from(vmid) << VTTBR_VMID_SHIFT);
        // SAFETY: TLB maintenance only; `dsb ishst` orders the table writes before it, `dsb ish`
        // waits for completion everywhere.
        unsafe {
            core::arch::asm!(
                "isb",
                "dsb ishst",
                "tlbi vmalls12e1is",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            )
        };
        VTTBR_EL2.set(old);
        barrier::isb(barrier::SY);
    }

    fn set_realm_pas(&self, pa: u64, realm: bool) {
        let r = mmu::set_page_mapped_concurrent(PhysAddr(pa), !realm);
        if !matches!(r, Some(Ok(()))) {
            log::error!(
                "embedded RMM: could not {} {pa:#x} in the host map",
                if realm { "unmap" } else { "remap" }
            );
        }
    }
}
