//! The virtio-mmio transport, version 2 (Virtio 1.2, §4.2.2 "MMIO Device Register Layout"), as
//! Linux's `virtio_mmio` driver programs it: identification, feature negotiation in 32-bit
//! halves, the queues' sizes and addresses, QueueReady, QueueNotify, the interrupt status and
//! its acknowledgement, the device status, and the device-specific configuration space.
//!
//! A realm requires VIRTIO_F_ACCESS_PLATFORM (its buffers are at addresses the platform
//! translates: the shared alias) and this device is modern only (VIRTIO_F_VERSION_1): a driver
//! that does not accept both is refused at FEATURES_OK (§3.1.1: the device leaves the bit clear).
//! A queue the driver makes ready with an impossible size, or any write the transport cannot
//! honour, sets DEVICE_NEEDS_RESET (§2.1.2) with the reason kept for the host's log — the
//! device stops, the hypervisor does not.

use super::virtqueue::{Queue, QueueError};
use alloc::vec::Vec;

pub use board::virtio_regs::{F_ACCESS_PLATFORM, F_VERSION_1, MAGIC_VALUE, VERSION_2, reg, status};

/// The vendor ID reported ("HYP " in ASCII; any value will do for the driver).
pub const VENDOR: u32 = 0x2050_5948;
/// What every device here requires of its driver.
const REQUIRED: u64 = F_VERSION_1 | F_ACCESS_PLATFORM;

/// InterruptStatus bits (§4.2.2): a used buffer, a configuration change.
pub const INT_USED_BUFFER: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// What a register write asks of the device behind the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The driver wrote QueueNotify for this queue: buffers are available.
    Notify(u16),
    /// The driver wrote 0 to Status: the device must drop all state.
    Reset,
    /// DRIVER_OK: the device is live.
    DriverOk,
}

/// One queue's configuration as the driver writes it.
#[derive(Clone, Copy, Debug, Default)]
struct QueueConfig {
    num: u32,
    desc: u64,
    driver: u64,
    device: u64,
    ready: bool,
}

/// The transport of one virtio device.
pub struct MmioTransport {
    device_id: u32,
    device_features: u64,
    queue_max: u16,
    queues: Vec<QueueConfig>,
    /// The virtqueues made ready, for the device to use.
    pub live: Vec<Option<Queue>>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// The device-specific configuration space (read by the driver, bytes at 0x100..).
    pub config: Vec<u8>,
    /// Why the device stopped (DEVICE_NEEDS_RESET), for the host's log.
    pub broken: Option<QueueError>,
}

fn set_half(word: &mut u64, high: bool, value: u32) {
    let shift = if high { 32 } else { 0 };
    *word = (*word & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
}

impl MmioTransport {
    /// A device of type `device_id` (§5: 1 net, 2 block, 3 console, ...) offering `features`
    /// (VERSION_1 and ACCESS_PLATFORM are added), with `queues` queues of at most `queue_max`.
    pub fn new(device_id: u32, features: u64, queues: usize, queue_max: u16, config: Vec<u8>) -> Self {
        Self {
            device_id,
            device_features: features | REQUIRED,
            queue_max,
            queues: alloc::vec![QueueConfig::default(); queues],
            live: alloc::vec![None; queues],
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            config,
            broken: None,
        }
    }

    pub fn status(&self) -> u32 {
        self.status
    }
    /// The features the driver accepted (valid once FEATURES_OK is set).
    pub fn negotiated(&self) -> u64 {
        self.driver_features & self.device_features
    }
    /// The interrupt line: something in InterruptStatus.
    pub fn irq_line(&self) -> bool {
        self.interrupt_status != 0
    }
    /// The device used buffers: raise the interrupt.
    pub fn signal_used(&mut self) {
        self.interrupt_status |= INT_USED_BUFFER;
    }

    fn queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Stop the device: DEVICE_NEEDS_RESET and a configuration-change interrupt (§2.1.2).
    pub fn stop(&mut self, why: QueueError) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG_CHANGE;
        self.broken.get_or_insert(why);
    }

    fn reset(&mut self) {
        let (id, features, max, n) =
            (self.device_id, self.device_features, self.queue_max, self.queues.len());
        let config = core::mem::take(&mut self.config);
        *self = Self::new(id, features, n, max, config);
    }

    /// A read of `width` bytes at `offset`: registers are 32-bit; the configuration space is
    /// byte-addressable. Anything else reads as zero.
    pub fn read(&self, offset: u64, width: u8) -> u64 {
        if offset >= reg::CONFIG {
            let at = (offset - reg::CONFIG) as usize;
            return match self.config.get(at..at + usize::from(width)) {
                Some(b) if matches!(width, 1 | 2 | 4 | 8) => {
                    b.iter().rev().fold(0u64, |v, byte| (v << 8) | u64::from(*byte))
                }
                _ => 0,
            };
        }
        if width != 4 {
            return 0;
        }
        let q = self.queues.get(self.queue_sel as usize);
        u64::from(match offset {
            reg::MAGIC => MAGIC_VALUE,
            reg::VERSION => VERSION_2,
            reg::DEVICE_ID => self.device_id,
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |_| u32::from(self.queue_max)),
            reg::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        })
    }

    /// A write of `width` bytes at `offset`; what the device must do about it, if anything.
    pub fn write(&mut self, offset: u64, width: u8, value: u64) -> Option<Event> {
        if offset >= reg::CONFIG || width != 4 {
            return None; // the configuration space of these devices is read-only
        }
        let v = value as u32;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES => match self.driver_features_sel {
                0 | 1 => set_half(&mut self.driver_features, self.driver_features_sel == 1, v),
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                if let Some(q) = self.queue() {
                    q.num = v;
                }
            }
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH => {
                if let Some(q) = self.queue() {
                    set_half(&mut q.desc, offset == reg::QUEUE_DESC_HIGH, v);
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH => {
                if let Some(q) = self.queue() {
                    set_half(&mut q.driver, offset == reg::QUEUE_DRIVER_HIGH, v);
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.queue() {
                    set_half(&mut q.device, offset == reg::QUEUE_DEVICE_HIGH, v);
                }
            }
            reg::QUEUE_READY => {
                let (sel, max) = (self.queue_sel as usize, self.queue_max);
                let q = self.queues.get_mut(sel)?;
                if v & 1 == 0 {
                    q.ready = false;
                    self.live[sel] = None;
                    return None;
                }
                let size = u16::try_from(q.num).unwrap_or(0);
                match Queue::new(size, max, q.desc, q.driver, q.device) {
                    Ok(queue) => {
                        q.ready = true;
                        self.live[sel] = Some(queue);
                    }
                    Err(e) => self.stop(e),
                }
            }
            reg::QUEUE_NOTIFY => {
                let q = v as usize;
                if self.live.get(q).is_some_and(Option::is_some) && self.status & status::DRIVER_OK != 0 {
                    return Some(Event::Notify(q as u16));
                }
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => {
                if v == 0 {
                    self.reset();
                    return Some(Event::Reset);
                }
                let was = self.status;
                let mut new = v & !status::DEVICE_NEEDS_RESET | (was & status::DEVICE_NEEDS_RESET);
                // FEATURES_OK only for a driver that took what a realm's device requires and
                // nothing it was not offered (§3.1.1).
                if new & status::FEATURES_OK != 0 && was & status::FEATURES_OK == 0 {
                    let bad = self.driver_features & !self.device_features != 0;
                    if bad || self.driver_features & REQUIRED != REQUIRED {
                        new &= !status::FEATURES_OK;
                    }
                }
                self.status = new;
                if new & status::DRIVER_OK != 0 && was & status::DRIVER_OK == 0 {
                    return Some(Event::DriverOk);
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: u32 = 2;

    fn dev() -> MmioTransport {
        MmioTransport::new(BLOCK, 1 << 9, 1, 256, alloc::vec![0x00, 0x20, 0, 0, 0, 0, 0, 0])
    }

    /// Linux's virtio_mmio probe and virtio core bring-up, in order.
    fn bring_up(d: &mut MmioTransport, accept: u64) -> u32 {
        assert_eq!(d.read(reg::MAGIC, 4), u64::from(MAGIC_VALUE));
        assert_eq!(d.read(reg::VERSION, 4), 2);
        assert_eq!(d.read(reg::DEVICE_ID, 4), u64::from(BLOCK));
        d.write(reg::STATUS, 4, 0);
        d.write(reg::STATUS, 4, u64::from(status::ACKNOWLEDGE));
        d.write(reg::STATUS, 4, u64::from(status::ACKNOWLEDGE | status::DRIVER));
        d.write(reg::DEVICE_FEATURES_SEL, 4, 1);
        let high = d.read(reg::DEVICE_FEATURES, 4);
        d.write(reg::DEVICE_FEATURES_SEL, 4, 0);
        let low = d.read(reg::DEVICE_FEATURES, 4);
        let offered = (high << 32) | low;
        for (sel, half) in [(0, accept as u32), (1, (accept >> 32) as u32)] {
            d.write(reg::DRIVER_FEATURES_SEL, 4, sel);
            d.write(reg::DRIVER_FEATURES, 4, u64::from(half & ((offered >> (32 * sel)) as u32)));
        }
        d.write(reg::STATUS, 4, u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK));
        d.read(reg::STATUS, 4) as u32
    }

    #[test]
    fn linux_brings_the_device_up_and_notifies() {
        let mut d = dev();
        let st = bring_up(&mut d, u64::MAX);
        assert_ne!(st & status::FEATURES_OK, 0);
        assert_eq!(d.negotiated(), (1 << 9) | F_VERSION_1 | F_ACCESS_PLATFORM);
        d.write(reg::QUEUE_SEL, 4, 0);
        assert_eq!(d.read(reg::QUEUE_NUM_MAX, 4), 256);
        d.write(reg::QUEUE_NUM, 4, 128);
        for (o, v) in [
            (reg::QUEUE_DESC_LOW, 0x8800_0000u64),
            (reg::QUEUE_DRIVER_LOW, 0x8800_1000),
            (reg::QUEUE_DEVICE_LOW, 0x8800_2000),
        ] {
            d.write(o, 4, v);
            d.write(o + 4, 4, 0);
        }
        assert_eq!(d.write(reg::QUEUE_NOTIFY, 4, 0), None, "not ready yet");
        d.write(reg::QUEUE_READY, 4, 1);
        assert_eq!(d.read(reg::QUEUE_READY, 4), 1);
        assert!(d.live[0].is_some_and(|q| q.size == 128 && q.avail == 0x8800_1000));
        assert_eq!(d.write(reg::STATUS, 4, u64::from(st | status::DRIVER_OK)), Some(Event::DriverOk));
        assert_eq!(d.write(reg::QUEUE_NOTIFY, 4, 0), Some(Event::Notify(0)));
        assert_eq!(d.write(reg::QUEUE_NOTIFY, 4, 5), None, "no such queue");
        d.signal_used();
        assert!(d.irq_line());
        d.write(reg::INTERRUPT_ACK, 4, u64::from(INT_USED_BUFFER));
        assert!(!d.irq_line());
        // The configuration space (a block device's capacity, 8 bytes) byte by byte or whole.
        assert_eq!(d.read(reg::CONFIG, 8), 0x2000);
        assert_eq!(d.read(reg::CONFIG + 1, 1), 0x20);
        assert_eq!(d.write(reg::STATUS, 4, 0), Some(Event::Reset));
        assert_eq!((d.status(), d.read(reg::QUEUE_READY, 4)), (0, 0), "reset drops everything");
        assert!(d.live[0].is_none());
    }

    #[test]
    fn a_driver_without_access_platform_or_with_a_bad_queue_is_refused() {
        let mut d = dev();
        let st = bring_up(&mut d, F_VERSION_1 | (1 << 9));
        assert_eq!(st & status::FEATURES_OK, 0, "a realm's device needs ACCESS_PLATFORM");
        let mut d = dev();
        bring_up(&mut d, u64::MAX);
        d.write(reg::QUEUE_NUM, 4, 100); // not a power of 2
        d.write(reg::QUEUE_READY, 4, 1);
        assert_ne!(d.read(reg::STATUS, 4) as u32 & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(d.broken, Some(QueueError::BadSize(100)));
        assert!(d.irq_line(), "the driver hears of it (configuration change)");
        // The driver gives up: FAILED is kept (with the device's own NEEDS_RESET) until a reset.
        d.write(reg::STATUS, 4, u64::from(status::FAILED));
        assert_eq!(d.status(), status::FAILED | status::DEVICE_NEEDS_RESET);
    }

    proptest::proptest! {
        /// Any access at any offset and width: no panic, registers read back within their width.
        #[test]
        fn any_access_is_survived(ops in proptest::collection::vec((0u64..0x200, proptest::sample::select(vec![1u8, 2, 3, 4, 8]), proptest::num::u64::ANY, proptest::bool::ANY), 1..200)) {
            let mut d = dev();
            for (offset, width, value, write) in ops {
                if write {
                    d.write(offset, width, value);
                } else {
                    let v = d.read(offset, width);
                    proptest::prop_assert!(width >= 8 || v >> (8 * u32::from(width)) == 0);
                }
            }
        }
    }
}
