//! A hostile realm against the model's RSI, PSCI and exit handling, as a property: whatever a
//! realm puts in x0..x6 when it issues an SMC (RSI and PSCI function ids with any arguments, or
//! any function id), and whatever aborts it takes, REC_ENTER returns (an exit or an RMI error)
//! and the model never panics; a host answering every exit the way a host may (or may not)
//! keeps it that way, and the realm can still be destroyed with every granule back.
mod common;
use common::*;
use proptest::prelude::*;
use rmi::rsi::{fid, psci};
use rmi::*;
use rmm_model::{Guest, HwExit, Stage2Config, VcpuContext};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
enum Act {
    Smc([u64; 7]),
    Hw(HwExit),
}

/// Plays back the acts; when they run out the realm powers off.
#[derive(Default)]
struct Hostile {
    acts: VecDeque<Act>,
}

impl Guest for Hostile {
    fn run(&mut self, vcpu: &mut VcpuContext, _: &Stage2Config) -> HwExit {
        let smc = HwExit::Sync { esr: (0x17 << 26) | (1 << 25), far: 0, hpfar: 0 };
        match self.acts.pop_front() {
            Some(Act::Smc(regs)) => {
                vcpu.gprs[..7].copy_from_slice(&regs);
                smc
            }
            Some(Act::Hw(hw)) => hw,
            None => {
                vcpu.gprs[0] = psci::SYSTEM_OFF;
                smc
            }
        }
    }
    fn inject_sea(&mut self, _: &mut VcpuContext, _: u64, _: u64) {}
    fn inject_undef(&mut self, _: &mut VcpuContext) {}
}

fn word() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1u64 << 38),
        Just((1u64 << 39) - 0x1000),
        Just(1u64 << 63),
        (0u64..0x40_0000).prop_map(|v| v & !0xfff),
        (0u64..0x40_0000).prop_map(|v| (v & !0xfff) | 1 << 38),
        (0u64..64).prop_map(|s| 1u64 << s),
        any::<u64>(),
    ]
}

fn smc_fid() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(fid::VERSION),
        Just(fid::FEATURES),
        Just(fid::MEASUREMENT_READ),
        Just(fid::MEASUREMENT_EXTEND),
        Just(fid::ATTEST_TOKEN_INIT),
        Just(fid::ATTEST_TOKEN_CONTINUE),
        Just(fid::REALM_CONFIG),
        Just(fid::IPA_STATE_SET),
        Just(fid::IPA_STATE_GET),
        Just(fid::HOST_CALL),
        Just(psci::VERSION),
        Just(psci::CPU_SUSPEND),
        Just(psci::CPU_ON),
        Just(psci::CPU_ON_32),
        Just(psci::AFFINITY_INFO),
        Just(psci::AFFINITY_INFO_32),
        Just(psci::CPU_OFF),
        Just(psci::FEATURES),
        Just(psci::SMCCC_VERSION),
        any::<u64>(),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (smc_fid(), [word(), word(), word(), word(), word(), word()]).prop_map(|(f, a)| {
            Act::Smc([f, a[0], a[1], a[2], a[3], a[4], a[5]])
        }),
        1 => (any::<bool>(), 0u64..32, 0u64..64, word()).prop_map(|(write, srt, dfsc, ipa)| {
            Act::Hw(HwExit::Sync { esr: dabt_esr(write, srt, dfsc), far: ipa, hpfar: hpfar(ipa) })
        }),
        1 => (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(esr, far, hpfar)| {
            Act::Hw(HwExit::Sync { esr, far, hpfar })
        }),
        1 => Just(Act::Hw(HwExit::Irq)),
        1 => any::<u64>().prop_map(|esr| Act::Hw(HwExit::SError { esr })),
    ]
}

/// What the host does with an exit before the next REC_ENTER: the right answer, or a wrong one.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// Set the RIPAS over the range asked (in steps), or complete PSCI with SUCCESS, and emulate.
    Cooperate,
    /// REC_ENTER with flags and the first GPR set to anything.
    Garbage(u64, u64),
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![3 => Just(Answer::Cooperate), 1 => (any::<u64>(), any::<u64>()).prop_map(|(f, g)| Answer::Garbage(f, g))]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_realm_registers_are_handled_without_panicking(
        acts in proptest::collection::vec(act(), 1..32),
        answers in proptest::collection::vec(answer(), 32),
    ) {
        let mut r = active_realm(Hostile::default());
        r.m.guest.acts.extend(acts);
        let mut run = Box::new(RecRun::zeroed());
        for (i, a) in answers.iter().enumerate() {
            let rec = r.recs[i % 4 / 3];
            match r.m.rec_enter(rec, &mut run) {
                Ok(()) => {}
                // Powered off, not runnable, a PSCI request pending, a bad flag: all fine answers.
                Err(_) => continue,
            }
            run.enter.flags = 0;
            match (*a, run.exit.exit_reason) {
                (Answer::Cooperate, exit_reason::RIPAS_CHANGE) => {
                    let (base, top) = (run.exit.ripas_base, run.exit.ripas_top);
                    let mut addr = base;
                    for _ in 0..8 {
                        match r.m.rtt_set_ripas(r.rd, rec, Ipa(addr), Ipa(top)) {
                            Ok(next) if next.0 > addr && next.0 < top => addr = next.0,
                            _ => break,
                        }
                    }
                }
                (Answer::Cooperate, exit_reason::PSCI) => {
                    let target = r.recs[(run.exit.gprs[1] & 1) as usize];
                    let _ = r.m.psci_complete(rec, target, PsciStatus::Success);
                }
                (Answer::Cooperate, exit_reason::SYNC) if run.exit.esr & (1 << 24) != 0 => {
                    run.enter.flags = enter_flags::EMUL_MMIO;
                }
                (Answer::Garbage(flags, x0), _) => {
                    run.enter.flags = flags;
                    run.enter.gprs[0] = x0;
                }
                _ => {}
            }
        }
        // The realm can still be taken apart, and every granule given back.
        for rec in &r.recs {
            prop_assert_eq!(r.m.rec_destroy(*rec), Ok(()));
        }
        for base in [0u64, 1 << 38] {
            let _ = r.m.data_destroy(r.rd, Ipa(base));
            for l in [3i8, 2] {
                let mut ipa = base;
                while ipa < base + (2 << 20) {
                    let _ = r.m.data_destroy(r.rd, Ipa(ipa));
                    let _ = r.m.rtt_unmap_unprotected(r.rd, Ipa(ipa), lvl(3));
                    ipa += 4096;
                }
                let _ = r.m.rtt_destroy(r.rd, Ipa(base), lvl(l));
            }
        }
        prop_assert_eq!(r.m.realm_destroy(r.rd), Ok(()));
        for g in &r.granules {
            prop_assert_eq!(r.m.granule_undelegate(*g), Ok(()), "{}", g);
        }
        prop_assert_eq!(r.m.granules().count(), 0);
    }
}
