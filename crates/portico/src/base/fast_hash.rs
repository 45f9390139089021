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
    /// Eight bytes at a time, the last word padded with zeros. Whole words are read as such, and the
    /// last one byte by byte: a copy of a slice of unknown length into a word is a call to `memcpy`
    /// (one per word of a session id, looked up on every request).
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut whole = [0u8; 8];
            whole.copy_from_slice(word);
            self.mix(u64::from_le_bytes(whole));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let last = rest
                .iter()
                .rev()
                .fold(0u64, |word, byte| word << 8 | u64::from(*byte));
            self.mix(last);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The words a text is hashed as: eight bytes each, little-endian, the last padded with zeros.
    fn by_words(bytes: &[u8]) -> u64 {
        let mut hasher = FastHasher::default();
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hasher.mix(u64::from_le_bytes(word));
        }
        hasher.finish()
    }

    #[test]
    fn texts_of_every_length_hash_as_their_padded_words() {
        let text: Vec<u8> = (0..=255u8).rev().collect();
        for len in 0..40 {
            let mut hasher = FastHasher::default();
            hasher.write(&text[..len]);
            assert_eq!(hasher.finish(), by_words(&text[..len]), "{len} bytes");
        }
        // One more byte, where the shorter text has padding, hashes apart.
        let (mut a, mut b) = (FastHasher::default(), FastHasher::default());
        a.write(b"session\x01");
        b.write(b"session");
        assert_ne!(a.finish(), b.finish());
    }
}
