//! Where a Linux kernel, its initramfs and its device tree go in the realm's RAM, per the arm64
//! boot protocol (Linux Documentation/arch/arm64/booting.rst): the Image at `text_offset` from a
//! 2 MiB-aligned base with `image_size` bytes free behind it (its .bss and early page tables),
//! entered at its first byte with x0 = the DTB's address; the DTB 8-byte aligned and at most
//! 2 MiB; the initramfs anywhere in RAM the kernel does not claim. Here: the kernel at the start
//! of RAM, then — each 2 MiB aligned — the initramfs and the DTB, all measured with DATA_CREATE
//! (kvmtool puts DTB and initrd near the top of the low 256 MiB instead; any place the protocol
//! allows is as good, and this one keeps the measured region contiguous).

use crate::addr::Gpa;
use alloc::format;
use alloc::string::String;

/// The Image header (booting.rst §4): code0/code1, then these, then the magic at 0x38.
const TEXT_OFFSET_AT: usize = 0x08;
const IMAGE_SIZE_AT: usize = 0x10;
const FLAGS_AT: usize = 0x18;
const MAGIC_AT: usize = 0x38;
/// "ARM\x64", little-endian.
const IMAGE_MAGIC: u32 = 0x644d_5241;
/// flags bits [2:1]: the kernel's page size (1 = 4 KiB, 2 = 16 KiB, 3 = 64 KiB, 0 = unspecified).
const FLAGS_PAGE_SIZE_SHIFT: u64 = 1;
const FLAGS_PAGE_SIZE_MASK: u64 = 0b11;
const PAGE_SIZE_4K: u64 = 1;
/// The kernel's base and everything placed after it are aligned to 2 MiB.
pub const ALIGN: u64 = 2 << 20;
/// The largest DTB the protocol allows.
pub const DTB_MAX: u64 = 2 << 20;

/// What a kernel Image says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    /// Bytes the kernel needs from its load address (0 in very old kernels: then unknown).
    pub image_size: u64,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Check and read an arm64 Image header.
pub fn parse_image(kernel: &[u8]) -> Result<ImageHeader, String> {
    if kernel.len() < MAGIC_AT + 4 {
        return Err(format!("the kernel is {} bytes: too short for an arm64 Image", kernel.len()));
    }
    let magic = u32::from_le_bytes([
        kernel[MAGIC_AT],
        kernel[MAGIC_AT + 1],
        kernel[MAGIC_AT + 2],
        kernel[MAGIC_AT + 3],
    ]);
    if magic != IMAGE_MAGIC {
        return Err(format!(
            "the kernel is not an arm64 Image (magic {magic:#010x} at 0x38, expected {IMAGE_MAGIC:#010x} \"ARM\\x64\"; a compressed vmlinuz must be unpacked first)"
        ));
    }
    let flags = le64(kernel, FLAGS_AT);
    let page = (flags >> FLAGS_PAGE_SIZE_SHIFT) & FLAGS_PAGE_SIZE_MASK;
    if page != PAGE_SIZE_4K && page != 0 {
        return Err(format!(
            "the kernel uses {} KiB pages; realms here use 4 KiB granules",
            4u64 << (2 * (page - 1))
        ));
    }
    let text_offset = le64(kernel, TEXT_OFFSET_AT);
    let image_size = le64(kernel, IMAGE_SIZE_AT);
    if !text_offset.is_multiple_of(4096) || text_offset >= ALIGN {
        return Err(format!("the kernel's text_offset {text_offset:#x} is not a page offset below 2 MiB"));
    }
    Ok(ImageHeader { text_offset, image_size: image_size.max(kernel.len() as u64) })
}

/// Where everything goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The Image's first byte, which is also its entry point.
    pub kernel: Gpa,
    /// The initramfs, `[start, end)`.
    pub initrd: (Gpa, Gpa),
    pub dtb: Gpa,
    /// The end of everything measured.
    pub end: Gpa,
}

/// Lay out a kernel (`hdr`), an initramfs of `initrd_len` bytes and a DTB of `dtb_len` bytes in
/// RAM `[ram, ram + ram_size)`; `Err` with the reason if they do not fit.
pub fn place(
    ram: Gpa,
    ram_size: u64,
    hdr: &ImageHeader,
    initrd_len: u64,
    dtb_len: u64,
) -> Result<Placement, String> {
    if !ram.0.is_multiple_of(ALIGN) {
        return Err(format!("the realm's RAM at {ram} is not 2 MiB aligned"));
    }
    if dtb_len > DTB_MAX {
        return Err(format!(
            "the device tree is {dtb_len} bytes, more than the 2 MiB the boot protocol allows"
        ));
    }
    let up = |x: u64| x.div_ceil(ALIGN) * ALIGN;
    let kernel = ram.0 + hdr.text_offset;
    let initrd = up(kernel + hdr.image_size);
    let dtb = up(initrd + initrd_len);
    let end = dtb + dtb_len;
    // The kernel allocates its early page tables and memblocks from the end of RAM: leave it room.
    let room = ram_size / 4;
    if end + room > ram.0 + ram_size {
        return Err(format!(
            "a {} MiB realm is too small for a {} MiB kernel and a {} MiB initramfs (give it --mem {} MiB or more)",
            ram_size >> 20,
            hdr.image_size >> 20,
            initrd_len >> 20,
            (up(end - ram.0) * 4 / 3 + ALIGN).div_ceil(1 << 20)
        ));
    }
    Ok(Placement {
        kernel: Gpa(kernel),
        initrd: (Gpa(initrd), Gpa(initrd + initrd_len)),
        dtb: Gpa(dtb),
        end: Gpa(end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn image(text_offset: u64, image_size: u64, flags: u64, len: usize) -> alloc::vec::Vec<u8> {
        let mut k = vec![0u8; len];
        k[TEXT_OFFSET_AT..TEXT_OFFSET_AT + 8].copy_from_slice(&text_offset.to_le_bytes());
        k[IMAGE_SIZE_AT..IMAGE_SIZE_AT + 8].copy_from_slice(&image_size.to_le_bytes());
        k[FLAGS_AT..FLAGS_AT + 8].copy_from_slice(&flags.to_le_bytes());
        k[MAGIC_AT..MAGIC_AT + 4].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        k
    }

    #[test]
    fn an_image_header_is_read_and_checked() {
        let h = parse_image(&image(0, 60 << 20, 0b010, 4096)).unwrap();
        assert_eq!(h, ImageHeader { text_offset: 0, image_size: 60 << 20 });
        assert!(parse_image(&[0; 16]).unwrap_err().contains("too short"));
        let mut gz = image(0, 0, 0b010, 4096);
        gz[MAGIC_AT] = 0;
        assert!(parse_image(&gz).unwrap_err().contains("not an arm64 Image"));
        assert!(parse_image(&image(0, 1 << 20, 0b110, 4096)).unwrap_err().contains("64 KiB pages"));
        assert!(parse_image(&image(0x123, 1 << 20, 0b010, 4096)).unwrap_err().contains("text_offset"));
        // An old kernel with image_size 0: the file's length at least.
        assert_eq!(parse_image(&image(0, 0, 0, 8192)).unwrap().image_size, 8192);
    }

    #[test]
    fn kernel_initrd_and_dtb_are_placed_aligned_and_in_order() {
        let h = ImageHeader { text_offset: 0, image_size: 51 << 20 };
        let p = place(Gpa(1 << 30), 512 << 20, &h, 3 << 20, 5000).unwrap();
        assert_eq!(p.kernel, Gpa(1 << 30));
        assert_eq!(p.initrd, (Gpa((1 << 30) + (52 << 20)), Gpa((1 << 30) + (55 << 20))));
        assert_eq!(p.dtb, Gpa((1 << 30) + (56 << 20)));
        assert!(p.dtb.0.is_multiple_of(8));
        let e = place(Gpa(1 << 30), 64 << 20, &h, 3 << 20, 5000).unwrap_err();
        assert!(e.contains("too small") && e.contains("--mem"), "{e}");
        assert!(place(Gpa(1 << 30), 512 << 20, &h, 0, 3 << 20).unwrap_err().contains("2 MiB"));
    }
}
