//! The SMC conduit (SMCCC v1.2) for RMI and PSCI. smccc's `smc64` declares no `nomem`/`readonly`,
//! so the compiler treats each call as reading and writing memory — required, because the RMM
//! reads and writes normal-world pages the host hands it (RealmParams, RecParams, RecRun).

/// Real SMCs to EL3.
pub struct Smc;

impl rmi::Conduit for Smc {
    fn call(&mut self, fid: u32, args: [u64; 6]) -> [u64; 5] {
        let mut a = [0u64; 17];
        a[..6].copy_from_slice(&args);
        let r = smccc::smc64(fid, a);
        [r[0], r[1], r[2], r[3], r[4]]
    }
}
