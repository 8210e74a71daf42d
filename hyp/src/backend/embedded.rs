//! The embedded backend on this machine: the RMM model over the RAM the DTB describes (minus
//! reservations), with the EL2 world switch (`arch::guest::ElGuest`) as its guest runner.

use crate::host::Hyp;
use alloc::string::String;

/// The embedded RMM model over this machine's RAM, running realms with the EL2 world switch.
pub type EmbeddedRmm = rmm_model::Model<crate::arch::rmm_mem::RmmMemory, crate::arch::guest::ElGuest>;

/// The world switch's view of this CPU: PA bits and whether VMIDs have 16 bits.
pub fn world_switch_params() -> Result<(u32, bool), String> {
    use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, ID_AA64MMFR1_EL1, Readable};
    if !crate::arch::guest::has_fwb() {
        return Err(String::from("the CPU lacks FEAT_S2FWB, which the embedded RMM's stage-2 format needs"));
    }
    let pa_bits = crate::cpufeat::pa_bits(ID_AA64MMFR0_EL1.get()).ok_or("reserved PARange")?;
    Ok((pa_bits, ID_AA64MMFR1_EL1.read(ID_AA64MMFR1_EL1::VMIDBits) == 0b10))
}

/// Build the embedded backend from what the CPU and the DTB say.
pub fn embedded_rmm(hyp: &Hyp) -> Result<EmbeddedRmm, String> {
    let (pa_bits, vmid16) = world_switch_params()?;
    let reserved: alloc::vec::Vec<_> = hyp.platform.reserved.iter().map(|r| r.range).collect();
    let ram = crate::memory::free_ranges(&hyp.platform.ram, &reserved);
    // The GIC CPU interface as TF-RMM sees it (QEMU: 4 list registers, 5 priority bits).
    let (lrs_minus_one, pri_bits, id24) = crate::arch::guest::gic_virt_features();
    let config = rmm_model::Config {
        max_ipa_bits: pa_bits.min(48),
        pa_bits,
        vmid16,
        gicv3_num_lrs: lrs_minus_one,
        gic_pri_bits: pri_bits,
        gic_max_vintid: if id24 { (1 << 24) - 1 } else { (1 << 16) - 1 },
        // `--rmi 2.0`: as tf-rmm-v0.9.0, whose RTT_INIT_RIPAS extends no measurement.
        measure_init_ripas: !hyp.opts.rmi2,
        nisv_abort_il: hyp.opts.rmi2,
        ..rmm_model::Config::default()
    };
    Ok(rmm_model::Model::new(
        crate::arch::rmm_mem::RmmMemory::new(ram),
        crate::arch::guest::ElGuest::new(pa_bits, vmid16),
        config,
    ))
}
