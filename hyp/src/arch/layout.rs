//! The linker script's symbols (linker.ld) and reads of firmware-provided memory (the DTB).

use crate::addr::{MemRange, PhysAddr};
use crate::platform::{DtbError, dtb_size};

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

/// The DTB the loader left at `pa`, as a byte slice, once its header is plausible.
///
/// `pa` is the start of RAM on QEMU virt in both boot modes (or the loader's x0): readable memory
/// with the MMU off or identity mapped, and the hypervisor never writes the DTB.
pub fn dtb(pa: PhysAddr) -> Result<&'static [u8], DtbError> {
    // SAFETY: 8 bytes at the start of RAM (see above) are readable; read_unaligned copes with any
    // alignment.
    let header = unsafe { core::ptr::read_unaligned(pa.0 as *const [u8; 8]) };
    let size = dtb_size(pa, header)?;
    // SAFETY: dtb_size checked the FDT magic and bounded the size to MAX_DTB_SIZE; the blob lies
    // in RAM that nothing writes for the life of the program.
    Ok(unsafe { core::slice::from_raw_parts(pa.0 as *const u8, size as usize) })
}

/// Give the heap region to the global allocator.
pub fn init_heap(heap: &buddy_system_allocator::LockedHeap<32>) {
    let r = self::heap();
    // SAFETY: the heap section is reserved by linker.ld for this purpose only, is NOLOAD memory
    // inside the image, and init runs once at boot before any allocation.
    unsafe { heap.lock().init(r.start.0 as usize, r.size() as usize) };
}
