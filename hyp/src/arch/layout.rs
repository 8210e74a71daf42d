//! The linker script's symbols (linker.ld) and reads of firmware-provided memory (the DTB).

use crate::addr::{MemRange, PhysAddr};

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    static __heap_start: u8;
    static __heap_end: u8;
}

fn range(start: &u8, end: &u8) -> MemRange {
    MemRange { start: PhysAddr(start as *const u8 as u64), end: PhysAddr(end as *const u8 as u64) }
}

/// The whole image: code, data, .bss, boot stack and heap.
pub fn image() -> MemRange {
    // SAFETY: linker-defined symbols; only their addresses are used.
    unsafe { range(&__image_start, &__image_end) }
}

/// The heap region reserved in the image for page tables and allocator bookkeeping.
pub fn heap() -> MemRange {
    // SAFETY: linker-defined symbols; only their addresses are used.
    unsafe { range(&__heap_start, &__heap_end) }
}

/// The first 8 bytes at `pa` (an FDT header's magic and totalsize).
///
/// # Safety
/// `pa` must be readable normal memory (the start of RAM in both boot modes).
pub unsafe fn read_header(pa: PhysAddr) -> [u8; 8] {
    // SAFETY: the caller guarantees 8 readable bytes; read_unaligned copes with any alignment.
    unsafe { core::ptr::read_unaligned(pa.0 as *const [u8; 8]) }
}

/// The DTB as a byte slice.
///
/// # Safety
/// `[pa, pa + len)` must be readable memory that nothing writes while the slice lives.
pub unsafe fn dtb_slice(pa: PhysAddr, len: u64) -> &'static [u8] {
    // SAFETY: guaranteed by the caller; the firmware's DTB is never written by the hypervisor.
    unsafe { core::slice::from_raw_parts(pa.0 as *const u8, len as usize) }
}

/// Give the heap region to the global allocator.
pub fn init_heap(heap: &buddy_system_allocator::LockedHeap<32>) {
    let r = self::heap();
    // SAFETY: the heap section is reserved by linker.ld for this purpose only, is NOLOAD memory
    // inside the image, and init runs once at boot before any allocation.
    unsafe { heap.lock().init(r.start.0 as usize, r.size() as usize) };
}
