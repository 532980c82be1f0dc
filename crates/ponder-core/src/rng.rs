//! The one seeded random-number generator every random choice in Ponder goes through.
//!
//! SplitMix64 (Steele, Lea and Flood, 2014): 64 bits of state, fast, and fully specified, so a
//! seed recorded today replays the same choices in any later version. Derived streams
//! ([`SeededRng::derive`]) give independent sequences for named purposes without sharing state.

/// A named, seeded generator. Never seeded from the clock inside library code.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    /// A generator for sub-stream `label` of `seed`, independent of the parent's sequence.
    pub fn derive(seed: u64, label: &str) -> Self {
        SeededRng::new(mix(seed ^ mix(stable_hash(label.as_bytes()))))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..bound` (`bound` ≥ 1), without modulo bias.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no value");
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % bound;
            }
        }
    }

    /// Uniform integer in `lo..=hi`.
    pub fn range_inclusive(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        let span = (hi as i128 - lo as i128 + 1) as u128;
        if span > u64::MAX as u128 {
            return self.next_u64() as i64;
        }
        (lo as i128 + self.below(span as u64) as i128) as i64
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }
}

/// FNV-1a, 64 bits: a hash that is stable across runs, platforms and Rust versions (unlike
/// `std`'s `DefaultHasher`), for deriving seeds from text.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of SplitMix64 seeded with 1234567, as published with the algorithm's
        // reference implementation (Vigna's splitmix64.c test vector).
        let mut rng = SeededRng::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
        assert_eq!(rng.next_u64(), 9817491932198370423);
    }

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(stable_hash(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xAF63_DC4C_8601_EC8C);
    }

    #[test]
    fn derived_streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4)
            .map(|_| SeededRng::derive(7, "a").next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SeededRng::derive(7, "a").next_u64(),
            SeededRng::derive(7, "b").next_u64()
        );
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut rng = SeededRng::new(3);
        for _ in 0..1000 {
            let x = rng.range_inclusive(-3, 3);
            assert!((-3..=3).contains(&x));
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        assert_eq!(rng.range_inclusive(5, 5), 5);
    }
}
