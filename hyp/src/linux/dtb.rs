//! The Linux realm's device tree, generated from the realm platform ([`board`]): every address and
//! interrupt comes from there, so the tree describes exactly the devices the host's bus emulates.
//!
//! The shape is QEMU `virt`'s (hw/arm/virt.c: node names, the `apb-pclk` clock, the GIC and timer
//! specifiers) cut down to what a realm kernel needs (shared/linux-realm.md §4–§8): RAM, the vCPUs
//! with PSCI over SMC — the conduit that lets Linux find out it is a realm — a GICv3 with one
//! redistributor region, the architected timer, a PL011 and its clock, and `/chosen`. No ITS, no
//! PMU. Device addresses are the unshared GPAs, as kvmtool writes them: Linux's `ioremap` adds the
//! shared bit itself once it knows it is a realm.
//!
//! The blob (Devicetree Specification v0.4, chapter 5: version 17, an empty memory reservation
//! block, deduplicated strings) is written by rust-vmm's `vm-fdt`, built `no_std` + `alloc`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use board::intid;
use rmi::RecParams;
use vm_fdt::FdtWriter;

/// What the device tree describes beyond the fixed platform.
#[derive(Clone, Copy, Debug)]
pub struct RealmDt<'a> {
    /// GPA of RAM ([`board::LINUX_RAM`]).
    pub ram_base: u64,
    pub ram_size: u64,
    /// 1..=[`board::MAX_VCPUS`]; `cpu@N`'s `reg` is vCPU N's MPIDR affinity, the one its REC gets.
    pub vcpus: usize,
    pub bootargs: &'a str,
    /// The initrd's GPA range: start, end (exclusive).
    pub initrd: Option<(u64, u64)>,
    /// virtio-mmio transports in the board's first slots (0: none; the host's bus must have a
    /// device in each: Linux probes every node).
    pub virtio_slots: usize,
}

/// Phandles of the two nodes others point at (any distinct non-zero values).
const GIC_PHANDLE: u32 = 1;
const CLK_PHANDLE: u32 = 2;

/// The root's `#address-cells` / `#size-cells`, and the GIC's: 64-bit addresses and sizes.
const ADDRESS_CELLS: u32 = 2;
const SIZE_CELLS: u32 = 2;
/// `/cpus`: `reg` is one cell of MPIDR affinity, with no size.
const CPU_ADDRESS_CELLS: u32 = 1;
const CPU_SIZE_CELLS: u32 = 0;
// The last vCPU's affinity (Aff1 7, Aff0 10) fits that one cell.
const _: () = assert!(RecParams::mpidr_for_index(board::MAX_VCPUS as u64 - 1) <= u32::MAX as u64);

/// A GICv3 interrupt specifier is (type, number, flags) (binding arm,gic-v3.yaml).
const GIC_INTERRUPT_CELLS: u32 = 3;
/// Specifier types (include/dt-bindings/interrupt-controller/arm-gic.h).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// Specifier flags (include/dt-bindings/interrupt-controller/irq.h): level-sensitive, active high.
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// The first INTID of each class: a specifier numbers PPIs and SPIs from there.
const PPI_BASE: u32 = 16;
const SPI_BASE: u32 = 32;
// PPIs the architecture (Arm's recommended INTIDs, which Linux's `arm,armv8-timer` binding and
// QEMU `virt` follow) fixes and no realm device raises, so the board has no constant for them.
/// GIC maintenance interrupt (QEMU ARCH_GIC_MAINT_IRQ, PPI 9): only KVM's vGIC would use it.
const GIC_MAINTENANCE_INTID: u32 = 25;
/// Secure EL1 physical timer (QEMU ARCH_TIMER_S_EL1_IRQ, PPI 13).
const SECURE_PTIMER_INTID: u32 = 29;
/// EL2 physical timer (QEMU ARCH_TIMER_NS_EL2_IRQ, PPI 10).
const HYP_TIMER_INTID: u32 = 26;

/// The PL011's clock: QEMU `virt`'s 24 MHz `apb-pclk`, which Linux's AMBA bus requires by name.
const APB_PCLK_HZ: u32 = 24_000_000;

/// A (PPI, level-high) GICv3 specifier from an INTID.
const fn ppi(intid: u32) -> [u32; 3] {
    [GIC_PPI, intid - PPI_BASE, IRQ_TYPE_LEVEL_HIGH]
}

/// A (SPI, level-high) GICv3 specifier from an INTID.
const fn spi(intid: u32) -> [u32; 3] {
    [GIC_SPI, intid - SPI_BASE, IRQ_TYPE_LEVEL_HIGH]
}

/// The strings of a stringlist property (the writer NUL-terminates each).
fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| String::from(*s)).collect()
}

/// The DTB of a Linux realm on the board's platform.
///
/// `Err` with the reason if `vcpus` is not in 1..=[`board::MAX_VCPUS`], the initrd ends before
/// it starts, or `bootargs` contains a NUL byte (the user's configuration: a clean stop, never a
/// panic).
pub fn realm_dtb(dt: &RealmDt<'_>) -> Result<Vec<u8>, String> {
    if !(1..=board::MAX_VCPUS).contains(&dt.vcpus) {
        return Err(format!("a realm has 1 to {} vCPUs, not {}", board::MAX_VCPUS, dt.vcpus));
    }
    if dt.virtio_slots > board::VIRTIO_SLOTS {
        return Err(format!(
            "the board has {} virtio-mmio slots, not {}",
            board::VIRTIO_SLOTS,
            dt.virtio_slots
        ));
    }
    if let Some((start, end)) = dt.initrd
        && start > end
    {
        return Err(format!("the initramfs {start:#x}..{end:#x} ends before it starts"));
    }
    // Every node and property name below is a valid constant, so only bootargs can fail.
    write(dt).map_err(|e| format!("the realm's device tree: {e} (command line {:?})", dt.bootargs))
}

fn write(dt: &RealmDt<'_>) -> vm_fdt::FdtWriterResult<Vec<u8>> {
    let uart_node = format!("pl011@{:x}", board::UART.base);
    let mut fdt = FdtWriter::new()?; // boot_cpuid_phys 0: vCPU 0 boots.

    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "hyp Arm CCA realm (QEMU virt layout)")?;
    fdt.property_u32("#address-cells", ADDRESS_CELLS)?;
    fdt.property_u32("#size-cells", SIZE_CELLS)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", dt.bootargs)?;
    fdt.property_string("stdout-path", &format!("/{uart_node}"))?;
    if let Some((start, end)) = dt.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    fdt.end_node(chosen)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", dt.ram_base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[dt.ram_base, dt.ram_size])?;
    fdt.end_node(memory)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", CPU_ADDRESS_CELLS)?;
    fdt.property_u32("#size-cells", CPU_SIZE_CELLS)?;
    for n in 0..dt.vcpus {
        let mpidr = RecParams::mpidr_for_index(n as u64) as u32;
        let cpu = fdt.begin_node(&format!("cpu@{mpidr:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        fdt.property_u32("reg", mpidr)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list("compatible", strings(&["arm,psci-1.0", "arm,psci-0.2"]))?;
    fdt.property_string("method", "smc")?;
    fdt.end_node(psci)?;

    let gicr = board::gicr(dt.vcpus);
    let gic = fdt.begin_node(&format!("intc@{:x}", board::GICD.base))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_u32("#interrupt-cells", GIC_INTERRUPT_CELLS)?;
    fdt.property_u32("#address-cells", ADDRESS_CELLS)?;
    fdt.property_u32("#size-cells", SIZE_CELLS)?;
    fdt.property_null("ranges")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_array_u64("reg", &[board::GICD.base, board::GICD.size, gicr.base, gicr.size])?;
    fdt.property_u32("#redistributor-regions", 1)?; // the one region in `reg`
    fdt.property_array_u32("interrupts", &ppi(GIC_MAINTENANCE_INTID))?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(gic)?;

    // Binding order: secure physical, non-secure physical, virtual, hypervisor physical. A realm
    // kernel runs at EL1 and uses the virtual timer.
    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    let timer_ppis = [SECURE_PTIMER_INTID, intid::PTIMER, intid::VTIMER, HYP_TIMER_INTID].map(ppi);
    fdt.property_array_u32("interrupts", timer_ppis.as_flattened())?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    let clk = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?; // one clock, so a reference is just the phandle
    fdt.property_u32("clock-frequency", APB_PCLK_HZ)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(CLK_PHANDLE)?;
    fdt.end_node(clk)?;

    let uart = fdt.begin_node(&uart_node)?;
    fdt.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
    fdt.property_array_u64("reg", &[board::UART.base, board::UART.size])?;
    fdt.property_array_u32("interrupts", &spi(intid::UART))?;
    fdt.property_array_u32("clocks", &[CLK_PHANDLE, CLK_PHANDLE])?;
    fdt.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
    fdt.end_node(uart)?;

    // virtio-mmio (binding virtio/mmio.yaml, as QEMU `virt` writes it). `dma-coherent`: the
    // realm's shared memory is Normal write-back on both sides.
    for slot in 0..dt.virtio_slots {
        let r = board::virtio(slot);
        let node = fdt.begin_node(&format!("virtio_mmio@{:x}", r.base))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u64("reg", &[r.base, r.size])?;
        fdt.property_array_u32("interrupts", &spi(intid::virtio(slot)))?;
        fdt.property_null("dma-coherent")?;
        fdt.end_node(node)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    //! The dtc round trip needs `dtc` (Debian's device-tree-compiler, installed by scripts/setup).
    use super::*;
    use crate::addr::{MemRange, PhysAddr};
    use crate::platform::{self, PsciMethod};
    use flat_device_tree::node::CellSize;
    use std::process::{Command, Stdio};

    /// FDT header fields (Devicetree Specification v0.4, 5.2) and structure tokens (5.4.1).
    const FDT_MAGIC: u32 = 0xd00d_feed;
    const FDT_HEADER_SIZE: usize = 40;
    const FDT_VERSION: u32 = 17;
    const FDT_LAST_COMP_VERSION: u32 = 16;
    const FDT_BEGIN_NODE: u32 = 1;
    const FDT_END: u32 = 9;
    /// A memory reservation entry: a 64-bit address and a 64-bit size.
    const FDT_RESERVE_ENTRY_SIZE: usize = 16;

    const MIB: u64 = 1 << 20;
    const BOOTARGS: &str = "console=ttyAMA0 earlycon=pl011,mmio32,0x109000000 rdinit=/init swiotlb=1024";

    fn example(vcpus: usize, initrd: Option<(u64, u64)>) -> Vec<u8> {
        realm_dtb(&RealmDt {
            ram_base: board::LINUX_RAM,
            ram_size: 512 * MIB,
            vcpus,
            bootargs: BOOTARGS,
            initrd,
            virtio_slots: 2,
        })
        .unwrap()
    }

    fn be32(blob: &[u8], off: usize) -> u32 {
        u32::from_be_bytes(blob[off..off + 4].try_into().unwrap())
    }

    /// `dtc -I dtb -O dts` of `blob`: the source text, and whatever dtc printed on stderr.
    fn decompile(blob: &[u8]) -> (String, String) {
        let out = Command::new("dtc")
            .args(["-I", "dtb", "-O", "dts", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(blob)?;
                c.wait_with_output()
            })
            .expect("dtc (device-tree-compiler) must be installed: run scripts/setup");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "dtc rejected the blob: {err}");
        (String::from_utf8(out.stdout).unwrap(), err)
    }

    #[test]
    fn the_header_and_blocks_are_well_formed() {
        let blob = example(4, Some((0x4800_0000, 0x4810_0000)));
        let field = |i: usize| be32(&blob, 4 * i);
        let [magic, total, off_struct, off_strings, off_rsv] = [0, 1, 2, 3, 4].map(field);
        let [version, last_comp, boot_cpu, size_strings, size_struct] = [5, 6, 7, 8, 9].map(field);
        assert_eq!(magic, FDT_MAGIC);
        assert_eq!(total as usize, blob.len());
        assert_eq!((version, last_comp, boot_cpu), (FDT_VERSION, FDT_LAST_COMP_VERSION, 0));
        // The reservation block: 8-byte aligned after the header, just the all-zero terminator.
        let off_rsv = off_rsv as usize;
        assert!(off_rsv >= FDT_HEADER_SIZE && off_rsv.is_multiple_of(8), "{off_rsv:#x}");
        assert!(blob[off_rsv..off_rsv + FDT_RESERVE_ENTRY_SIZE].iter().all(|b| *b == 0));
        // The structure block follows it, 4-aligned, from FDT_BEGIN_NODE to FDT_END; the strings
        // block ends the blob.
        let (off_struct, size_struct) = (off_struct as usize, size_struct as usize);
        assert_eq!(off_struct, off_rsv + FDT_RESERVE_ENTRY_SIZE);
        assert!(off_struct.is_multiple_of(4) && size_struct.is_multiple_of(4));
        assert_eq!(be32(&blob, off_struct), FDT_BEGIN_NODE);
        assert_eq!(be32(&blob, off_struct + size_struct - 4), FDT_END);
        assert_eq!(off_strings as usize, off_struct + size_struct);
        assert_eq!(off_strings as usize + size_strings as usize, blob.len());
        // Each property name is stored once.
        let strings = &blob[off_strings as usize..];
        assert_eq!(strings.last(), Some(&0));
        let mut names: Vec<&[u8]> = strings[..strings.len() - 1].split(|b| *b == 0).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "the strings block repeats a name");
        assert!(names.contains(&&b"linux,initrd-start"[..]));
        // The checks the hypervisor's own DTB loader makes.
        assert_eq!(platform::dtb_size(PhysAddr(0), blob[..8].try_into().unwrap()), Ok(blob.len() as u64));
    }

    #[test]
    fn dtc_reads_it_back_without_complaint() {
        let (dts, err) = decompile(&example(4, Some((0x4800_0000, 0x4810_0000))));
        assert!(err.is_empty(), "dtc warned:\n{err}");
        for line in [
            r#"compatible = "linux,dummy-virt";"#,
            "interrupt-parent = <0x01>;",
            r#"bootargs = "console=ttyAMA0 earlycon=pl011,mmio32,0x109000000 rdinit=/init swiotlb=1024";"#,
            r#"stdout-path = "/pl011@9000000";"#,
            "linux,initrd-start = <0x00 0x48000000>;",
            "linux,initrd-end = <0x00 0x48100000>;",
            "memory@40000000 {",
            "reg = <0x00 0x40000000 0x00 0x20000000>;",
            "cpu@3 {",
            r#"enable-method = "psci";"#,
            r#"compatible = "arm,psci-1.0\0arm,psci-0.2";"#,
            r#"method = "smc";"#,
            "intc@8000000 {",
            // GICD 64 KiB, then 4 redistributors of 128 KiB.
            "reg = <0x00 0x8000000 0x00 0x10000 0x00 0x80a0000 0x00 0x80000>;",
            "#redistributor-regions = <0x01>;",
            "interrupts = <0x01 0x09 0x04>;",
            "interrupts = <0x01 0x0d 0x04 0x01 0x0e 0x04 0x01 0x0b 0x04 0x01 0x0a 0x04>;",
            "clock-frequency = <0x16e3600>;",
            "reg = <0x00 0x9000000 0x00 0x1000>;",
            "interrupts = <0x00 0x01 0x04>;",
            "clocks = <0x02 0x02>;",
            r#"clock-names = "uartclk\0apb_pclk";"#,
            "virtio_mmio@a000200 {",
            r#"compatible = "virtio,mmio";"#,
            "reg = <0x00 0xa000200 0x00 0x200>;",
            "interrupts = <0x00 0x11 0x04>;",
            "dma-coherent;",
        ] {
            assert!(dts.contains(line), "no `{line}` in\n{dts}");
        }
        assert!(!dts.contains("cpu@4") && !dts.contains("virtio_mmio@a000400"), "{dts}");

        let (dts, err) = decompile(&example(1, None));
        assert!(err.is_empty(), "dtc warned:\n{err}");
        assert!(!dts.contains("linux,initrd"), "{dts}");
    }

    #[test]
    fn the_hypervisor_parser_finds_the_platform() {
        let vcpus = 20; // past 16, so Aff1 is in use
        let blob = example(vcpus, Some((0x4800_0000, 0x4810_0000)));
        let p = platform::parse(&blob, PhysAddr(board::LINUX_RAM)).unwrap();
        assert_eq!(p.ram, [MemRange::from_base_size(board::LINUX_RAM, 512 * MIB).unwrap()]);
        assert_eq!(p.uart, MemRange::from_base_size(board::UART.base, board::UART.size).unwrap());
        let gic = p.gic.unwrap();
        assert_eq!(gic.distributor, MemRange::from_base_size(board::GICD.base, board::GICD.size).unwrap());
        let gicr = board::gicr(vcpus);
        assert_eq!(gic.redistributors, MemRange::from_base_size(gicr.base, gicr.size).unwrap());
        assert_eq!(p.psci, Some(PsciMethod::Smc));
        assert_eq!(p.cpus, vcpus);
        let recs: Vec<u64> = (0..vcpus as u64).map(RecParams::mpidr_for_index).collect();
        assert_eq!(p.cpu_ids, recs);
        assert_eq!(p.cpu_ids[17], 0x101, "vCPU 17 is Aff1 1, Aff0 1");
        assert!(p.reserved.is_empty());

        let fdt = flat_device_tree::Fdt::new(&blob).unwrap();
        let chosen = fdt.chosen().unwrap();
        assert_eq!(chosen.bootargs(), Some(BOOTARGS));
        assert_eq!(chosen.stdout().map(|s| s.node().name), Some("pl011@9000000"));
        let chosen_node = fdt.find_node("/chosen").unwrap();
        let initrd = |name| chosen_node.property(name).and_then(|p| p.as_usize());
        assert_eq!(
            (initrd("linux,initrd-start"), initrd("linux,initrd-end")),
            (Some(0x4800_0000), Some(0x4810_0000))
        );
        let timer = fdt.find_compatible(&["arm,armv8-timer"]).unwrap();
        // flat_device_tree follows neither an inherited interrupt-parent nor 3-cell specifiers:
        // read both raw.
        let parent = fdt.root().unwrap().property("interrupt-parent").and_then(|p| p.as_usize()).unwrap();
        assert_eq!(fdt.find_phandle(parent as u32).map(|n| n.name), Some("intc@8000000"));
        let cells: Vec<u64> = timer.property("interrupts").unwrap().iter_cell_size(CellSize::One).collect();
        assert_eq!(cells[6..9], [1, (intid::VTIMER - 16).into(), 4], "the virtual timer, third");
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let dt = |vcpus, bootargs, initrd| {
            realm_dtb(&RealmDt {
                ram_base: board::LINUX_RAM,
                ram_size: 512 * MIB,
                vcpus,
                bootargs,
                initrd,
                virtio_slots: 0,
            })
        };
        assert!(dt(board::MAX_VCPUS + 1, BOOTARGS, None).unwrap_err().contains("vCPUs"));
        assert!(dt(0, BOOTARGS, None).unwrap_err().contains("vCPUs"));
        assert!(dt(1, BOOTARGS, Some((2 * MIB, MIB))).unwrap_err().contains("ends before it starts"));
        assert!(dt(1, "a\0b", None).unwrap_err().contains("command line"));
        let many = RealmDt {
            virtio_slots: board::VIRTIO_SLOTS + 1,
            ..RealmDt { ram_base: 0, ram_size: MIB, vcpus: 1, bootargs: "", initrd: None, virtio_slots: 0 }
        };
        assert!(realm_dtb(&many).unwrap_err().contains("virtio-mmio slots"));
    }
}
