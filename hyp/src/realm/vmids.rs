//! VMIDs for the realms of one boot (issue 17, item 3): RMM v1.0 REALM_CREATE refuses a VMID
//! another live realm holds, or one the CPU cannot tag (TF-RMM `vmid_reserve`: below 2^16 with
//! FEAT_VMID16, else below 2^8). VMID 0 is never handed out: it tags the host's own stage 2 (the
//! hypervisor runs with VTTBR_EL2 = 0), as KVM keeps it back. The lowest free value is taken and
//! a destroyed realm's VMID is free again.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;

/// The VMIDs in use, and how many the CPU has.
pub struct Vmids {
    live: BTreeSet<u16>,
    /// One past the largest VMID: 2^16 with FEAT_VMID16, 2^8 without.
    limit: u32,
}

impl Vmids {
    pub fn new(vmid16: bool) -> Self {
        Self { live: BTreeSet::new(), limit: if vmid16 { 1 << 16 } else { 1 << 8 } }
    }

    /// The lowest free VMID, now in use; `Err` (the reason) when every one is.
    pub fn alloc(&mut self) -> Result<u16, String> {
        // The first gap in the sorted set (1, 2, 3, … up to the first value missing).
        let free = (1..self.limit)
            .zip(self.live.iter().chain(core::iter::repeat(&0)))
            .find(|(want, have)| u32::from(**have) != *want)
            .map(|(v, _)| v as u16);
        match free {
            Some(v) => {
                self.live.insert(v);
                Ok(v)
            }
            None => Err(format!(
                "no VMID left: all {} are held by live realms ({}-bit VMIDs; 0 is the host's)",
                self.limit - 1,
                if self.limit > 1 << 8 { 16 } else { 8 }
            )),
        }
    }

    /// `vmid`'s realm was destroyed: the VMID may be handed out again.
    pub fn free(&mut self, vmid: u16) {
        self.live.remove(&vmid);
    }

    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_first_and_recycled() {
        let mut v = Vmids::new(false);
        assert_eq!((v.alloc(), v.alloc(), v.alloc()), (Ok(1), Ok(2), Ok(3)));
        v.free(2);
        assert_eq!(v.alloc(), Ok(2), "a destroyed realm's VMID is handed out again");
        assert_eq!(v.alloc(), Ok(4));
        assert_eq!(v.live(), 4);
    }

    #[test]
    fn without_vmid16_there_are_255() {
        let mut v = Vmids::new(false);
        for want in 1..=255u16 {
            assert_eq!(v.alloc(), Ok(want));
        }
        let e = v.alloc().unwrap_err();
        assert!(e.contains("all 255 are held") && e.contains("8-bit"), "{e}");
        v.free(77);
        assert_eq!(v.alloc(), Ok(77));
    }

    #[test]
    fn with_vmid16_past_255() {
        let mut v = Vmids::new(true);
        for _ in 1..=255 {
            v.alloc().unwrap();
        }
        assert_eq!(v.alloc(), Ok(256), "past 8 bits with FEAT_VMID16");
    }
}
