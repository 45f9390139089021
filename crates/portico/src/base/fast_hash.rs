//! A multiply-and-rotate hasher (as rustc's FxHash) for keys no client chooses: SipHash resists keys
//! crafted to collide, and costs ~20 times as much on the short keys the request path hashes.

use std::hash::{BuildHasherDefault, Hasher};

/// Builds [`FastHasher`]s, for a `HashMap` of keys the gateway picked itself.
pub type Fast = BuildHasherDefault<FastHasher>;

#[derive(Default)]
pub struct FastHasher(u64);

impl FastHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    /// Eight bytes at a time, the last word padded with zeros.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
