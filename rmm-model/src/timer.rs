//! A REC's EL1 timers as TF-RMM rmm-spec-v1.0-rel0 handles them (`runtime/core/timers.c`).
//!
//! The realm uses the real EL1 virtual and physical timers (CNTV_*, CNTP_*; CNTHCTL_EL2 traps
//! neither, CNTVOFF = CNTPOFF = 0), so they run — and their PPIs 27/30 assert at the physical
//! GIC — while the realm does. The host sees each timer's CTL and CVAL in every RecExit and
//! injects the virtual PPI through the list registers. So that an asserted timer does not make
//! the physical PPI fire again and again, the world switch masks it (CNTHCTL_EL2.CNTVMASK /
//! CNTPMASK) while it is asserted (`check_pending_timers`). And whenever a timer's output has
//! changed since the host last saw it, REC_ENTER returns at once with RMI_EXIT_IRQ, without
//! running the realm, so the host learns of it.

/// CNTx_CTL_EL0 bits (Arm ARM D24.8).
pub const CTL_ENABLE: u64 = 1 << 0;
pub const CTL_IMASK: u64 = 1 << 1;
pub const CTL_ISTATUS: u64 = 1 << 2;

/// A REC's two EL1 timers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    pub cntv_ctl: u64,
    pub cntv_cval: u64,
    pub cntp_ctl: u64,
    pub cntp_cval: u64,
}

/// TF-RMM `TIMER_ASSERTED`: enabled, condition met, not masked.
pub const fn asserted(ctl: u64) -> bool {
    ctl & (CTL_ENABLE | CTL_ISTATUS | CTL_IMASK) == CTL_ENABLE | CTL_ISTATUS
}

impl Timers {
    /// Whether either timer's output differs between `self` (live) and `reported` (what the
    /// last RecExit said): the condition for an IRQ exit before running the realm.
    pub fn changed_since(&self, reported: &Timers) -> bool {
        asserted(self.cntv_ctl) != asserted(reported.cntv_ctl)
            || asserted(self.cntp_ctl) != asserted(reported.cntp_ctl)
    }
    /// TF-RMM `report_timer_state_to_ns` (offsets are zero).
    pub fn to_exit(&self, exit: &mut rmi::RecExit) {
        exit.cntv_ctl = self.cntv_ctl;
        exit.cntv_cval = self.cntv_cval;
        exit.cntp_ctl = self.cntp_ctl;
        exit.cntp_cval = self.cntp_cval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asserted_means_enabled_met_and_unmasked() {
        assert!(asserted(CTL_ENABLE | CTL_ISTATUS));
        assert!(!asserted(CTL_ENABLE | CTL_ISTATUS | CTL_IMASK));
        assert!(!asserted(CTL_ISTATUS), "disabled");
        assert!(!asserted(CTL_ENABLE), "not yet due");
        let due = Timers { cntv_ctl: CTL_ENABLE | CTL_ISTATUS, ..Timers::default() };
        let armed = Timers { cntv_ctl: CTL_ENABLE, cntv_cval: 5, ..Timers::default() };
        assert!(due.changed_since(&armed));
        assert!(!armed.changed_since(&Timers::default()), "armed but not due is not asserted");
        assert!(Timers { cntp_ctl: CTL_ENABLE | CTL_ISTATUS, ..armed }.changed_since(&armed));
    }
}
