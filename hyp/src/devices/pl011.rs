//! The realm's UART: a PL011 that Linux's `amba-pl011` driver probes and drives and that
//! `earlycon=pl011,mmio32,…` writes, built around the realm [`Console`] (Arm PrimeCell UART
//! (PL011) Technical Reference Manual, ARM DDI 0183G, r1p5: register summary Table 3-1, register
//! descriptions §3.3, interrupts §2.8; linux-realm.md §6 for what the driver does).
//!
//! # Registers (offset, TRM section)
//!
//! | Offset | Register | §3.3 | Here |
//! |---|---|---|---|
//! | 0x000 | UARTDR | .1 | write: the low byte to the [`Console`]; read: the next received byte, or 0 |
//! | 0x004 | UARTRSR/ECR | .2 | read: OE (the receive queue overflowed); any write clears it |
//! | 0x018 | UARTFR | .3 | TXFE always set, TXFF and BUSY always clear, RXFE/RXFF from the receive queue |
//! | 0x020 | UARTILPR | .4 | stored, 8 bits |
//! | 0x024 | UARTIBRD | .5 | stored, 16 bits |
//! | 0x028 | UARTFBRD | .6 | stored, 6 bits |
//! | 0x02C | UARTLCR_H | .7 | stored, 8 bits |
//! | 0x030 | UARTCR | .8 | stored (reserved bits 6:3 read zero); LBE loops TX back into RX |
//! | 0x034 | UARTIFLS | .9 | stored, 6 bits; the trigger levels are not used (below) |
//! | 0x038 | UARTIMSC | .10 | stored, 11 bits |
//! | 0x03C | UARTRIS | .11 | read only |
//! | 0x040 | UARTMIS | .12 | read only: RIS & IMSC |
//! | 0x044 | UARTICR | .13 | write-1-to-clear RIS bits; reads zero |
//! | 0x048 | UARTDMACR | .14 | stored, 3 bits; no DMA (the DT names no `dmas`, so Linux never sets it) |
//! | 0xFE0–0xFEC | UARTPeriphID0–3 | Table 3-1 | 0x11, 0x10, 0x14, 0x00 (QEMU's `pl011_id_arm`) |
//! | 0xFF0–0xFFC | UARTPCellID0–3 | Table 3-1 | 0x0D, 0xF0, 0x05, 0xB1 |
//!
//! Reset values as the TRM gives them: CR = 0x300 (TXE | RXE, UARTEN clear), IFLS = 0x12, FR =
//! TXFE | RXFE, everything else zero.
//!
//! # Access rules (one place: [`Pl011::decode`])
//!
//! Linux's AMBA bus reads the ID registers with `readl`; the `amba-pl011` driver then uses
//! 16-bit `readw`/`writew` for every register of an `arm,pl011` (32-bit only for ports whose
//! vendor data sets `access_32b`, UPIO_MEM32); earlycon uses 32-bit (`mmio32`) or 8-bit
//! accesses to DR and FR. An access of 1, 2 or 4 bytes at a register's offset reaches the
//! register: a read returns the register (masked to the width), a write takes the value
//! zero-extended from the access (as QEMU's memory core does for its 4-byte-only PL011). Any
//! other width, any offset inside a register, and any offset no register names reads as zero and
//! ignores writes (RAZ/WI).
//!
//! # Transmit: always, at once
//!
//! Every DR write goes straight to the [`Console`] (line assembly per vCPU, the last
//! `console::KEEP` lines, the first failure line) whatever CR says, as QEMU does: the test realm and
//! earlycon write DR without ever enabling the UART (CR.UARTEN is clear at reset) and must print
//! exactly as they did with the plain console. The transmitter is never busy and never full.
//!
//! # Interrupt model (QEMU's `hw/char/pl011.c`)
//!
//! * **TXIS** (RIS bit 5) is raised by every DR write and cleared only by ICR (or, in the
//!   driver's view, by masking TXIM). The TRM (§2.8) asserts the transmit interrupt when the TX
//!   FIFO level *passes through* the trigger level on its way down; a FIFO that drains the moment
//!   it is written makes that transition on every write. So TXIS is not raised at reset, nor by
//!   enabling TXE or TXIM with nothing sent. That is what Linux expects since "Activate TX IRQ
//!   passively": `pl011_start_tx` writes DR while FR.TXFF is clear and only unmasks TXIM if
//!   characters remain, then the handler refills or masks TXIM again (it never clears TXIS
//!   through ICR); QEMU's UART, the one Linux on `virt` is tested against, behaves the same.
//! * **RXIS** (bit 4) is raised whenever bytes arrive (through [`Pl011::push_input`] or loopback)
//!   and cleared when a DR read empties the receive queue or by ICR. QEMU's trigger level is
//!   fixed at one character (its `pl011_set_read_trigger` ignores IFLS, "linux only reads the
//!   FIFO in response to an interrupt"), so IFLS is stored but not used here either. Unlike QEMU,
//!   which raises RXIS only when the count *reaches* the trigger, every arrival re-raises it, so
//!   an ICR of RXIS with data still queued cannot leave the input stuck.
//! * **RTIS** (bit 6), the receive timeout, is never raised, as in QEMU: with a one-character
//!   trigger RXIS already covers "fewer bytes than the trigger level, then silence", and Linux's
//!   `pl011_int` handles RXIS and RTIS alike (`status & (UART011_RTIS | UART011_RXIS)`). It is
//!   cleared with RXIS when the queue empties.
//! * **OEIS** (bit 10) is raised, with RSR.OE, when input arrives while the receive queue is
//!   full (the byte is dropped and counted in [`Pl011::rx_dropped`]); RSR.OE is cleared by a
//!   write to ECR.
//! * The modem-status (bits 3:0) and the framing, parity and break errors (bits 9:7) never
//!   occur.
//!
//! The interrupt line (UARTINTR) is [`Pl011::irq_line`] = (RIS & IMSC) != 0; the caller re-reads
//! it after every access and every `push_input`.
//!
//! # Receive queue
//!
//! Input is a queue of up to [`RX_CAPACITY`] bytes rather than the PL011's 16 or 32-entry FIFO,
//! so the host can hand over a burst without pacing it; the driver reads until FR.RXFE (at most
//! 256 bytes per pass of its handler, then the still-raised RXIS brings it back). The depth does
//! not depend on LCR_H.FEN and a FEN change does not flush the queue. Input is accepted whether
//! or not CR.UARTEN and RXE are set (Linux drains anything already there when it starts).

use super::console::Console;
use super::{BusDevice, MmioAccess};
use alloc::collections::VecDeque;

/// Register offsets (TRM Table 3-1).
pub mod reg {
    /// UARTDR, data (§3.3.1).
    pub const DR: u64 = 0x000;
    /// UARTRSR (read) / UARTECR (write), receive status and error clear (§3.3.2).
    pub const RSR_ECR: u64 = 0x004;
    /// UARTFR, flags (§3.3.3).
    pub const FR: u64 = 0x018;
    /// UARTILPR, IrDA low-power counter (§3.3.4).
    pub const ILPR: u64 = 0x020;
    /// UARTIBRD, integer baud rate divisor (§3.3.5).
    pub const IBRD: u64 = 0x024;
    /// UARTFBRD, fractional baud rate divisor (§3.3.6).
    pub const FBRD: u64 = 0x028;
    /// UARTLCR_H, line control (§3.3.7).
    pub const LCR_H: u64 = 0x02c;
    /// UARTCR, control (§3.3.8).
    pub const CR: u64 = 0x030;
    /// UARTIFLS, interrupt FIFO level select (§3.3.9).
    pub const IFLS: u64 = 0x034;
    /// UARTIMSC, interrupt mask set/clear (§3.3.10).
    pub const IMSC: u64 = 0x038;
    /// UARTRIS, raw interrupt status (§3.3.11).
    pub const RIS: u64 = 0x03c;
    /// UARTMIS, masked interrupt status (§3.3.12).
    pub const MIS: u64 = 0x040;
    /// UARTICR, interrupt clear (§3.3.13).
    pub const ICR: u64 = 0x044;
    /// UARTDMACR, DMA control (§3.3.14).
    pub const DMACR: u64 = 0x048;
    /// UARTPeriphID0; ID1–3 follow at +4, +8, +0xC (Table 3-1).
    pub const PERIPH_ID0: u64 = 0xfe0;
    /// UARTPCellID0; ID1–3 follow at +4, +8, +0xC (Table 3-1).
    pub const PCELL_ID0: u64 = 0xff0;
    /// The size of the register window (the DT's `reg` size).
    pub const WINDOW: u64 = 0x1000;
    const _: () = assert!(WINDOW == board::UART.size, "the realm platform's UART window");
}

/// UARTFR bits (§3.3.3).
pub mod fr {
    /// Transmit FIFO empty.
    pub const TXFE: u32 = 1 << 7;
    /// Receive FIFO full.
    pub const RXFF: u32 = 1 << 6;
    /// Transmit FIFO full (never: transmission is instant).
    #[allow(dead_code, reason = "the layout, for the tests; the emulation keeps it clear")]
    pub const TXFF: u32 = 1 << 5;
    /// Receive FIFO empty.
    pub const RXFE: u32 = 1 << 4;
    /// UART busy transmitting (never).
    #[allow(dead_code, reason = "the layout, for the tests; the emulation keeps it clear")]
    pub const BUSY: u32 = 1 << 3;
}

/// UARTRSR bits (§3.3.2).
pub mod rsr {
    /// Overrun error: data arrived while the receive FIFO was full.
    pub const OE: u32 = 1 << 3;
}

/// UARTCR bits (§3.3.8).
pub mod cr {
    /// UART enable (transmission does not depend on it here, as in QEMU).
    #[allow(dead_code, reason = "the layout, for the tests; TX is not gated on it")]
    pub const UARTEN: u32 = 1 << 0;
    /// Loopback enable: the transmit path feeds the receive path.
    pub const LBE: u32 = 1 << 7;
    pub const TXE: u32 = 1 << 8;
    pub const RXE: u32 = 1 << 9;
    /// The writable bits: 15:7 and 2:0 (6:3 are reserved).
    pub const MASK: u32 = 0xff87;
    /// The reset value: TXE | RXE.
    pub const RESET: u32 = TXE | RXE;
}

/// Interrupt bits, the same in UARTIMSC, UARTRIS, UARTMIS and UARTICR (§3.3.10–§3.3.13).
pub mod int {
    /// nUARTRI modem interrupt.
    pub const RI: u32 = 1 << 0;
    /// nUARTCTS modem interrupt.
    pub const CTS: u32 = 1 << 1;
    /// nUARTDCD modem interrupt.
    pub const DCD: u32 = 1 << 2;
    /// nUARTDSR modem interrupt.
    pub const DSR: u32 = 1 << 3;
    /// Receive (RXIM / RXRIS / RXMIS / RXIC).
    pub const RX: u32 = 1 << 4;
    /// Transmit (TXIM / TXRIS / TXMIS / TXIC).
    pub const TX: u32 = 1 << 5;
    /// Receive timeout (RTIM / RTRIS / RTMIS / RTIC).
    pub const RT: u32 = 1 << 6;
    /// Framing error.
    pub const FE: u32 = 1 << 7;
    /// Parity error.
    pub const PE: u32 = 1 << 8;
    /// Break error.
    pub const BE: u32 = 1 << 9;
    /// Overrun error.
    pub const OE: u32 = 1 << 10;
    /// Every interrupt bit: 10:0.
    pub const ALL: u32 = RI | CTS | DCD | DSR | RX | TX | RT | FE | PE | BE | OE;
    const _: () = assert!(ALL == 0x7ff);
    /// The ones this device never raises (module docs): modem status, line errors, timeout.
    #[allow(dead_code, reason = "what the tests check stays clear")]
    pub const NEVER: u32 = RI | CTS | DCD | DSR | FE | PE | BE | RT;
}

/// Writable widths of the other registers.
const ILPR_MASK: u32 = 0xff;
const IBRD_MASK: u32 = 0xffff;
const FBRD_MASK: u32 = 0x3f;
const LCR_H_MASK: u32 = 0xff;
const IFLS_MASK: u32 = 0x3f;
/// IFLS at reset: both trigger levels at half full (§3.3.9).
const IFLS_RESET: u32 = 0x12;
const DMACR_MASK: u32 = 0x7;

/// PeriphID0–3, then PCellID0–3: periphid 0x00141011 (part 0x011, designer 0x41 'A', revision
/// 1), cellid 0xB105F00D — the bytes Linux's AMBA bus reads to match the `amba-pl011` driver.
pub const ID: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The most received bytes queued for the realm; more are dropped and counted.
pub const RX_CAPACITY: usize = 4096;

/// A register, as an offset names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    Dr,
    RsrEcr,
    Fr,
    Ilpr,
    Ibrd,
    Fbrd,
    LcrH,
    Cr,
    Ifls,
    Imsc,
    Ris,
    Mis,
    Icr,
    Dmacr,
    /// One of the eight identification bytes.
    Id(u8),
}

/// Every register and its offset: anything not here is RAZ/WI.
const REGS: [(u64, Reg); 22] = [
    (reg::DR, Reg::Dr),
    (reg::RSR_ECR, Reg::RsrEcr),
    (reg::FR, Reg::Fr),
    (reg::ILPR, Reg::Ilpr),
    (reg::IBRD, Reg::Ibrd),
    (reg::FBRD, Reg::Fbrd),
    (reg::LCR_H, Reg::LcrH),
    (reg::CR, Reg::Cr),
    (reg::IFLS, Reg::Ifls),
    (reg::IMSC, Reg::Imsc),
    (reg::RIS, Reg::Ris),
    (reg::MIS, Reg::Mis),
    (reg::ICR, Reg::Icr),
    (reg::DMACR, Reg::Dmacr),
    (reg::PERIPH_ID0, Reg::Id(ID[0])),
    (reg::PERIPH_ID0 + 4, Reg::Id(ID[1])),
    (reg::PERIPH_ID0 + 8, Reg::Id(ID[2])),
    (reg::PERIPH_ID0 + 0xc, Reg::Id(ID[3])),
    (reg::PCELL_ID0, Reg::Id(ID[4])),
    (reg::PCELL_ID0 + 4, Reg::Id(ID[5])),
    (reg::PCELL_ID0 + 8, Reg::Id(ID[6])),
    (reg::PCELL_ID0 + 0xc, Reg::Id(ID[7])),
];

/// An emulated PL011: the [`Console`] for output, the registers, and a receive queue.
pub struct Pl011 {
    /// The output side: every transmitted byte goes through it, so its `lines` and
    /// `first_failure` are the realm's console exactly as before.
    pub console: Console,
    /// Received bytes not yet read through DR (at most [`RX_CAPACITY`]).
    rx: VecDeque<u8>,
    /// Received bytes dropped because the queue was full.
    pub rx_dropped: u64,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
}

impl Pl011 {
    /// A UART in its reset state whose console assembles lines for `vcpus` vCPUs.
    pub fn new(vcpus: usize) -> Self {
        Self {
            console: Console::new(vcpus),
            rx: VecDeque::new(),
            rx_dropped: 0,
            rsr: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: cr::RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            ris: 0,
            dmacr: 0,
        }
    }

    /// UARTINTR, the combined interrupt: some raw interrupt is unmasked.
    pub fn irq_line(&self) -> bool {
        self.ris & self.imsc != 0
    }

    /// Input for the realm: queue `bytes` (dropping, and counting, what does not fit) and raise
    /// RXIS if any arrived.
    pub fn push_input(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.receive(b);
        }
    }

    /// Whether the realm's driver receives: RXE and the receive interrupt unmasked. Input that
    /// arrived before would be drained and dropped by Linux's amba-pl011 at start-up.
    pub fn rx_ready(&self) -> bool {
        self.cr & cr::RXE != 0 && self.imsc & int::RX != 0
    }

    /// Received bytes waiting to be read.
    #[cfg(test)]
    pub fn rx_pending(&self) -> usize {
        self.rx.len()
    }

    fn receive(&mut self, byte: u8) {
        if self.rx.len() < RX_CAPACITY {
            self.rx.push_back(byte);
            self.ris |= int::RX;
        } else {
            self.rx_dropped += 1;
            self.rsr |= rsr::OE;
            self.ris |= int::OE;
        }
    }

    /// The register an access reaches, if the access is one the device answers (module docs).
    fn decode(access: &MmioAccess) -> Option<Reg> {
        if !matches!(access.width, 1 | 2 | 4) {
            return None;
        }
        REGS.iter().find(|(offset, _)| *offset == access.offset).map(|(_, r)| *r)
    }

    fn flags(&self) -> u32 {
        let mut flags = fr::TXFE;
        if self.rx.is_empty() {
            flags |= fr::RXFE;
        }
        if self.rx.len() >= RX_CAPACITY {
            flags |= fr::RXFF;
        }
        flags
    }

    fn read_reg(&mut self, reg: Reg) -> u32 {
        match reg {
            Reg::Dr => {
                let byte = self.rx.pop_front().unwrap_or(0);
                if self.rx.is_empty() {
                    self.ris &= !(int::RX | int::RT);
                }
                u32::from(byte)
            }
            Reg::RsrEcr => self.rsr,
            Reg::Fr => self.flags(),
            Reg::Ilpr => self.ilpr,
            Reg::Ibrd => self.ibrd,
            Reg::Fbrd => self.fbrd,
            Reg::LcrH => self.lcr_h,
            Reg::Cr => self.cr,
            Reg::Ifls => self.ifls,
            Reg::Imsc => self.imsc,
            Reg::Ris => self.ris,
            Reg::Mis => self.ris & self.imsc,
            Reg::Icr => 0,
            Reg::Dmacr => self.dmacr,
            Reg::Id(byte) => u32::from(byte),
        }
    }

    fn write_reg(&mut self, access: &MmioAccess, reg: Reg, value: u32) {
        match reg {
            Reg::Dr => {
                let byte = value as u8;
                // The console's data register is at the same offset: it prints the byte.
                let tx = MmioAccess { offset: reg::DR, width: 1, write: Some(u64::from(byte)), ..*access };
                self.console.write(&tx, u64::from(byte));
                if self.cr & cr::LBE != 0 {
                    self.receive(byte);
                }
                self.ris |= int::TX;
            }
            Reg::RsrEcr => self.rsr = 0,
            Reg::Ilpr => self.ilpr = value & ILPR_MASK,
            Reg::Ibrd => self.ibrd = value & IBRD_MASK,
            Reg::Fbrd => self.fbrd = value & FBRD_MASK,
            Reg::LcrH => self.lcr_h = value & LCR_H_MASK,
            Reg::Cr => self.cr = value & cr::MASK,
            Reg::Ifls => self.ifls = value & IFLS_MASK,
            Reg::Imsc => self.imsc = value & int::ALL,
            Reg::Icr => self.ris &= !value,
            Reg::Dmacr => self.dmacr = value & DMACR_MASK,
            Reg::Fr | Reg::Ris | Reg::Mis | Reg::Id(_) => {}
        }
    }
}

impl BusDevice for Pl011 {
    fn read(&mut self, access: &MmioAccess) -> u64 {
        match Self::decode(access) {
            Some(reg) => u64::from(self.read_reg(reg)) & MmioAccess::mask(access.width),
            None => 0,
        }
    }

    fn write(&mut self, access: &MmioAccess, value: u64) {
        if let Some(reg) = Self::decode(access) {
            // At most 4 bytes wide (decode), so the masked value fits.
            let value = (value & MmioAccess::mask(access.width)) as u32;
            self.write_reg(access, reg, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn rd_w(u: &mut Pl011, offset: u64, width: u8) -> u64 {
        u.read(&MmioAccess { vcpu: 0, offset, width, write: None })
    }
    fn wr_w(u: &mut Pl011, vcpu: usize, offset: u64, width: u8, value: u64) {
        let value = value & MmioAccess::mask(width);
        u.write(&MmioAccess { vcpu, offset, width, write: Some(value) }, value);
    }
    fn rd(u: &mut Pl011, offset: u64) -> u32 {
        rd_w(u, offset, 4) as u32
    }
    fn wr(u: &mut Pl011, offset: u64, value: u32) {
        wr_w(u, 0, offset, 4, u64::from(value));
    }

    /// What the driver does from probe to an open port (linux-realm.md §6), with its 16-bit
    /// accesses (`pl011_read`/`pl011_write` on a UPIO_MEM port).
    fn linux_startup(u: &mut Pl011) {
        let rd = |u: &mut Pl011, offset| rd_w(u, offset, 2) as u32;
        let wr = |u: &mut Pl011, offset, value: u32| wr_w(u, 0, offset, 2, u64::from(value));
        // pl011_register_port / pl011_hwinit: mask and clear everything.
        wr(u, reg::IMSC, 0);
        wr(u, reg::ICR, 0xffff);
        wr(u, reg::ICR, int::ALL);
        // pl011_set_termios: 115200 8N1 with FIFOs at 24 MHz.
        wr(u, reg::IBRD, 13);
        wr(u, reg::FBRD, 1);
        wr(u, reg::LCR_H, 0x70);
        // pl011_startup.
        wr(u, reg::IFLS, 0x12);
        let keep = rd(u, reg::CR) & ((1 << 11) | (1 << 10));
        wr(u, reg::CR, keep | cr::UARTEN | cr::TXE | cr::RXE);
        // pl011_enable_interrupts: clear, drain, unmask RX.
        wr(u, reg::ICR, int::RT | int::RX);
        for _ in 0..32 {
            if rd(u, reg::FR) & fr::RXFE != 0 {
                break;
            }
            rd(u, reg::DR);
        }
        wr(u, reg::IMSC, int::RT | int::RX);
    }

    #[test]
    fn the_amba_bus_finds_a_pl011() {
        let mut u = Pl011::new(1);
        // amba_read_ids: the low byte of each word, little-endian.
        let id = |u: &mut Pl011, base: u64| {
            (0..4).fold(0u32, |id, i| id | (rd(u, base + 4 * i) & 0xff) << (8 * i))
        };
        assert_eq!(id(&mut u, reg::PERIPH_ID0), 0x0014_1011);
        assert_eq!(id(&mut u, reg::PCELL_ID0), 0xb105_f00d);
        // Byte and halfword reads of an ID register, and writes do nothing.
        assert_eq!(rd_w(&mut u, 0xff0, 1), 0x0d);
        assert_eq!(rd_w(&mut u, 0xffc, 2), 0xb1);
        wr(&mut u, 0xfe0, 0);
        assert_eq!(rd(&mut u, 0xfe0), 0x11);
        assert_eq!(reg::PCELL_ID0 + 0x10, reg::WINDOW);
    }

    #[test]
    fn reset_values_and_the_linux_startup_sequence() {
        let mut u = Pl011::new(1);
        assert_eq!(rd(&mut u, reg::CR), cr::TXE | cr::RXE);
        assert_eq!(rd(&mut u, reg::IFLS), 0x12);
        assert_eq!(rd(&mut u, reg::FR), fr::TXFE | fr::RXFE);
        assert_eq!(rd(&mut u, reg::RIS), 0);
        linux_startup(&mut u);
        assert_eq!(rd(&mut u, reg::CR), cr::UARTEN | cr::TXE | cr::RXE);
        assert_eq!(rd(&mut u, reg::IMSC), int::RT | int::RX);
        assert_eq!((rd(&mut u, reg::IBRD), rd(&mut u, reg::FBRD), rd(&mut u, reg::LCR_H)), (13, 1, 0x70));
        assert_eq!(rd(&mut u, reg::FR), fr::TXFE | fr::RXFE, "idle: not busy, not full");
        assert_eq!(rd(&mut u, reg::RIS), 0);
        assert_eq!(rd(&mut u, reg::ICR), 0, "write-only");
        assert!(!u.irq_line());
        // Stored widths: the TRM's, not the bus's.
        wr(&mut u, reg::IBRD, u32::MAX);
        wr(&mut u, reg::FBRD, u32::MAX);
        wr(&mut u, reg::DMACR, u32::MAX);
        assert_eq!((rd(&mut u, reg::IBRD), rd(&mut u, reg::FBRD), rd(&mut u, reg::DMACR)), (0xffff, 0x3f, 7));
        // Input queued before startup is drained by it (up to 32 bytes), as on QEMU.
        let mut v = Pl011::new(1);
        v.push_input(b"noise");
        linux_startup(&mut v);
        assert_eq!(v.rx_pending(), 0);
        assert!(!v.irq_line());
    }

    #[test]
    fn transmitted_bytes_become_console_lines_exactly_as_on_the_console() {
        let mut u = Pl011::new(2);
        let mut c = Console::new(2);
        let mut text: Vec<(usize, String)> = alloc::vec![
            (0, "realm: start\nhe".into()),
            (1, "realm: FAIL at line 3\n".into()),
            (0, "llo\n".into()),
            (0, "x".repeat(600) + "\n"),
            (7, "no such vCPU\n".into()),
        ];
        for i in 0..100 {
            text.push((i % 2, alloc::format!("line {i}\nrealm: FAIL later\n")));
        }
        // The test realm: DR writes only, no CR write (the UART is not even enabled), 32-bit;
        // earlycon: byte writes.
        for (n, (vcpu, s)) in text.iter().enumerate() {
            for b in s.bytes() {
                let width = if n % 2 == 0 { 4 } else { 1 };
                wr_w(&mut u, *vcpu, reg::DR, width, u64::from(b) | 0x4100);
                c.write(&MmioAccess { vcpu: *vcpu, offset: 0, width: 4, write: Some(b.into()) }, b.into());
            }
        }
        assert_eq!(u.console.lines, c.lines);
        assert_eq!(u.console.first_failure, c.first_failure);
        assert_eq!(u.console.first_failure.as_deref(), Some("realm: FAIL at line 3"));
        assert_eq!(rd(&mut u, reg::FR) & (fr::TXFF | fr::BUSY), 0);
        // Other registers and offsets print nothing.
        let before = u.console.lines.clone();
        for offset in [reg::RSR_ECR, reg::CR, 0x001, 0x100] {
            wr_w(&mut u, 0, offset, 4, u64::from(b'\n'));
        }
        wr_w(&mut u, 0, reg::DR, 8, u64::from(b'\n'));
        assert_eq!(u.console.lines, before);
    }

    #[test]
    fn received_bytes_raise_rx_until_drained() {
        let mut u = Pl011::new(1);
        linux_startup(&mut u);
        wr(&mut u, reg::IMSC, 0);
        u.push_input(b"hi");
        assert_eq!(rd(&mut u, reg::FR) & fr::RXFE, 0);
        assert_eq!(rd(&mut u, reg::RIS), int::RX);
        assert!(!u.irq_line(), "RXIM masked");
        wr(&mut u, reg::IMSC, int::RX | int::RT);
        assert!(u.irq_line());
        assert_eq!(rd(&mut u, reg::MIS), int::RX);
        assert_eq!(rd(&mut u, reg::DR), u32::from(b'h'));
        assert!(u.irq_line(), "one byte left");
        assert_eq!(rd_w(&mut u, reg::DR, 2), u64::from(b'i'));
        assert!(!u.irq_line());
        assert_eq!(rd(&mut u, reg::FR), fr::TXFE | fr::RXFE);
        assert_eq!(rd(&mut u, reg::RIS), 0);
        assert_eq!(rd(&mut u, reg::DR), 0, "empty");
        // ICR drops RXIS with data still queued; the next arrival raises it again.
        u.push_input(b"ab");
        wr(&mut u, reg::ICR, int::RX);
        assert!(!u.irq_line());
        u.push_input(b"c");
        assert!(u.irq_line());
        assert_eq!((0..3).map(|_| rd(&mut u, reg::DR) as u8).collect::<Vec<_>>(), b"abc");
        assert!(!u.irq_line());
        // Nothing arriving raises nothing.
        u.push_input(b"");
        assert!(!u.irq_line());
    }

    #[test]
    fn a_full_receive_queue_drops_and_reports_overrun() {
        let mut u = Pl011::new(1);
        linux_startup(&mut u);
        u.push_input(&[b'z'; RX_CAPACITY + 10]);
        assert_eq!(u.rx_pending(), RX_CAPACITY);
        assert_eq!(u.rx_dropped, 10);
        assert_eq!(rd(&mut u, reg::FR), fr::TXFE | fr::RXFF);
        assert_eq!(rd(&mut u, reg::RSR_ECR), rsr::OE);
        assert_eq!(rd(&mut u, reg::RIS), int::RX | int::OE);
        wr(&mut u, reg::RSR_ECR, 0);
        assert_eq!(rd(&mut u, reg::RSR_ECR), 0);
        rd(&mut u, reg::DR);
        assert_eq!(rd(&mut u, reg::FR), fr::TXFE);
    }

    #[test]
    fn tx_interrupt_is_raised_by_each_write_and_cleared_by_icr() {
        let mut u = Pl011::new(1);
        linux_startup(&mut u);
        // Unmasking TXIM with nothing sent raises nothing (no transition through the level).
        wr(&mut u, reg::IMSC, int::RX | int::RT | int::TX);
        assert!(!u.irq_line());
        wr(&mut u, reg::IMSC, int::RX | int::RT);
        // pl011_start_tx: write while !TXFF, then unmask TXIM: the handler runs at once.
        wr(&mut u, reg::DR, u32::from(b'x'));
        assert_eq!(rd(&mut u, reg::RIS), int::TX);
        assert!(!u.irq_line(), "TXIM masked");
        wr(&mut u, reg::IMSC, int::RX | int::RT | int::TX);
        assert!(u.irq_line());
        assert_eq!(rd(&mut u, reg::MIS), int::TX);
        // The handler with nothing more to send masks TXIM again.
        wr(&mut u, reg::IMSC, int::RX | int::RT);
        assert!(!u.irq_line());
        // ICR clears it; the next write raises it again.
        wr(&mut u, reg::IMSC, int::RX | int::RT | int::TX);
        wr(&mut u, reg::ICR, int::TX);
        assert!(!u.irq_line());
        assert_eq!(rd(&mut u, reg::RIS), 0);
        wr(&mut u, reg::DR, u32::from(b'\n'));
        assert!(u.irq_line());
        assert_eq!(u.console.lines.back().map(String::as_str), Some("x"));
    }

    #[test]
    fn loopback_feeds_the_transmitter_to_the_receiver() {
        let mut u = Pl011::new(1);
        linux_startup(&mut u);
        wr(&mut u, reg::CR, cr::UARTEN | cr::TXE | cr::RXE | cr::LBE);
        wr(&mut u, reg::DR, u32::from(b'a'));
        assert!(u.irq_line(), "RX");
        assert_eq!(rd(&mut u, reg::DR), u32::from(b'a'));
        wr(&mut u, reg::DR, u32::from(b'\n'));
        assert_eq!(u.console.lines.back().map(String::as_str), Some("a"), "and still printed");
    }

    #[test]
    fn access_rules() {
        let mut u = Pl011::new(1);
        // 1, 2 and 4 bytes at a register's offset; writes zero-extend.
        wr(&mut u, reg::ILPR, 0xab);
        wr_w(&mut u, 0, reg::CR, 1, 0x1ff);
        assert_eq!(rd(&mut u, reg::CR), 0x87, "a byte write replaces the register; 6:3 reserved");
        wr_w(&mut u, 0, reg::CR, 2, 0x0301);
        assert_eq!(rd_w(&mut u, reg::CR, 1), 0x01);
        assert_eq!(rd_w(&mut u, reg::CR, 2), 0x0301);
        // Other widths, and offsets inside a register: RAZ/WI.
        for width in [3, 8, 16] {
            assert_eq!(rd_w(&mut u, reg::CR, width), 0);
            wr_w(&mut u, 0, reg::CR, width, 0);
        }
        assert_eq!(rd_w(&mut u, reg::CR + 1, 1), 0);
        wr_w(&mut u, 0, reg::CR + 1, 1, 0);
        assert_eq!(rd(&mut u, reg::CR), 0x0301);
        assert_eq!(rd(&mut u, reg::ILPR), 0xab);
        // Unnamed offsets: the gaps, past DMACR, the ID pages' neighbours.
        for offset in [0x008, 0x014, 0x01c, 0x04c, 0xfd0, 0xfdc, 0x1000] {
            wr(&mut u, offset, u32::MAX);
            assert_eq!(rd(&mut u, offset), 0, "{offset:#x}");
        }
        // Registers that are read-only ignore writes.
        wr(&mut u, reg::RIS, int::ALL);
        wr(&mut u, reg::MIS, int::ALL);
        wr(&mut u, reg::FR, 0);
        assert_eq!(rd(&mut u, reg::RIS), 0);
        assert_eq!(rd(&mut u, reg::FR), fr::TXFE | fr::RXFE);
    }

    fn op() -> impl Strategy<Value = (u8, u64, u8, u64, usize, Vec<u8>)> {
        (
            0u8..4,
            prop_oneof![0u64..0x50, 0xfc0u64..0x1000, 0u64..0x1000, any::<u64>()],
            prop::sample::select(&[1u8, 2, 3, 4, 8, 16][..]),
            any::<u64>(),
            0usize..4,
            prop::collection::vec(any::<u8>(), 0..8),
        )
    }

    proptest! {
        /// A hostile realm and host: any access at any offset, width and value, interleaved with
        /// input, never panics, and the registers stay consistent with the queue.
        #[test]
        fn any_access_is_survived(ops in prop::collection::vec(op(), 1..200)) {
            let mut u = Pl011::new(2);
            for (kind, offset, width, value, vcpu, input) in ops {
                let access = MmioAccess { vcpu, offset, width, write: None };
                match kind {
                    0 => {
                        let v = u.read(&access);
                        prop_assert_eq!(v & !MmioAccess::mask(width), 0);
                    }
                    1 | 2 => {
                        let value = value & MmioAccess::mask(width);
                        u.write(&MmioAccess { write: Some(value), ..access }, value);
                    }
                    _ => u.push_input(&input),
                }
                let flags = rd(&mut u, reg::FR);
                prop_assert_eq!(flags & fr::RXFE != 0, u.rx_pending() == 0);
                prop_assert_eq!(flags & (fr::TXFE | fr::TXFF | fr::BUSY), fr::TXFE);
                let (ris, imsc, mis) = (rd(&mut u, reg::RIS), rd(&mut u, reg::IMSC), rd(&mut u, reg::MIS));
                prop_assert_eq!(ris & !int::ALL, 0);
                prop_assert_eq!(ris & int::NEVER, 0);
                prop_assert_eq!(mis, ris & imsc);
                prop_assert_eq!(u.irq_line(), mis != 0);
                prop_assert!(u.rx_pending() <= RX_CAPACITY);
                prop_assert!(u.console.lines.len() <= crate::devices::console::KEEP);
            }
        }
    }
}
